/*
 * TRAIN: one run of the sweep: `hetfield train` with the hyperparameters carried in meta.
 *
 *   in : [ meta (id = run_id, beta, zdim, n_classes, …), dataset dir ], epochs, batch size
 *   out: [ meta, run dir ]   (config.yaml, metrics.jsonl, weights.N.pt, latent.N.npz, run.log)
 *
 * Retries (conf/base.config retries exit 75 = CUDA out of memory, and signal exits):
 *  - the batch size is halved on every attempt (`batch_size >> (attempt - 1)`, at least 1);
 *  - a retry runs in a new work directory, so there is nothing to resume in it. Where the failed
 *    attempt's directory is still readable as a path (local and grid executors on a shared
 *    filesystem, e.g. a walltime kill on slurm), its run directory is copied in and training
 *    continues with `--load latest` from the last checkpoint (or the mid-epoch resume.pt written
 *    on SIGTERM). On cloud executors the previous work dir is an object-store URI and the retry
 *    starts afresh. The published run's config.yaml records the batch size actually used.
 */
process TRAIN {
    tag "${meta.id}"
    label 'process_gpu'
    container params.container

    input:
    tuple val(meta), path(dataset)
    val epochs
    val batch_size

    output:
    tuple val(meta), path("run_${meta.id}"), emit: run
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    def previous = task.previousTrace?.workdir ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus}

    load=''
    previous_run='${previous}/run_${meta.id}'
    if [ -n '${previous}' ] && ls "\$previous_run"/weights.*.pt "\$previous_run"/resume.pt 2>/dev/null | grep -q .; then
        cp -R "\$previous_run" run_${meta.id}
        load='--load latest'
    fi

    bs=\$(( ${batch_size} >> (${task.attempt} - 1) ))
    [ "\$bs" -ge 1 ] || bs=1

    hetfield train run_${meta.id} --data ${dataset} --beta ${meta.beta} --zdim ${meta.zdim} --n-classes ${meta.n_classes} --epochs ${epochs} --batch-size "\$bs" \$load ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: \$(hetfield --version | sed 's/^hetfield //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p run_${meta.id}
    touch run_${meta.id}/config.yaml run_${meta.id}/metrics.jsonl

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: stub
    END_VERSIONS
    """
}
