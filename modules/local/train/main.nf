/*
 * TRAIN: one run of the sweep, with every setting its plan row holds.
 *
 *   in : [ meta (id, run_id, the plan row's columns, dataset), dataset dir, plan.csv ]
 *   out: [ meta, run dir ]              (config.yaml, metrics.jsonl, weights.N.pt, latent.N.npz, run.log)
 *        [ meta, batch size used ]      (differs from the plan's only after an out-of-memory retry)
 *
 * Settings: `hetfield sweep config` turns the run's plan row into a YAML of every training setting,
 * with the code `hetfield sweep run` trains from, and `hetfield train --config` applies it: the
 * pipeline trains what the plan says and adds no settings of its own (no ext.args here: a training
 * setting belongs in the plan, so that runs.csv and the run agree).
 *
 * GPUs: the task's accelerator request (params.gpus_per_run with -profile gpu: conf/base.config, and
 * the slurm/google profiles) above 1 trains under torchrun with one process per GPU it was given.
 *
 * Retries (conf/base.config retries exit 75 = CUDA out of memory, and signal exits):
 *  - the batch size is halved on every attempt (`--batch-size` overrides the YAML);
 *  - a retry runs in a new work directory, so there is nothing to resume in it. Where the failed
 *    attempt's directory is still readable as a path (local and grid executors on a shared
 *    filesystem, e.g. a walltime kill on slurm), its run directory is copied in and training
 *    continues with `--load latest` from the last checkpoint (or the mid-epoch resume.pt written
 *    on SIGTERM). On cloud executors the previous work dir is an object-store URI and the retry
 *    starts afresh. The run's config.yaml records the batch size actually used.
 *
 * The run directory is named after meta.id, which `hetfield train` records as the run's run_id:
 * the id that convergence, analysis and the sweep summary report.
 */
process TRAIN {
    tag "${meta.id}"
    label 'process_gpu'

    input:
    tuple val(meta), path(dataset), path(plan)

    output:
    tuple val(meta), path("${meta.id}"), emit: run
    tuple val(meta), env('batch_size'), emit: batch_size
    path 'versions.yml', emit: versions

    script:
    def previous = task.previousTrace?.workdir ?: ''
    def gpus = task.accelerator?.request ?: 1
    """
    export OMP_NUM_THREADS=${task.cpus}
    export MPLCONFIGDIR="\$PWD/.cache/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba" XDG_CACHE_HOME="\$PWD/.cache"

    hetfield sweep config ${plan} --run-id ${meta.run_id} --out ${meta.id}.yaml

    load=''
    previous_run='${previous}/${meta.id}'
    if [ -n '${previous}' ] && { [ -e "\$previous_run/resume.pt" ] || compgen -G "\$previous_run/weights.*.pt" > /dev/null; }; then
        cp -R "\$previous_run" ${meta.id}
        load='--load latest'
    fi

    batch_size=\$(sed -n 's/^batch_size: *//p' ${meta.id}.yaml)
    batch_size=\$(( batch_size >> (${task.attempt} - 1) ))
    [ "\$batch_size" -ge 1 ] || batch_size=1

    # Several GPUs: one process per GPU under torchrun (DistributedDataParallel; rank 0 writes the
    # run, and torchrun passes SIGTERM on to every rank, so a walltime kill still checkpoints).
    # Ab initio runs too: each rank searches its share of every batch and the poses are shared.
    trainer='hetfield'
    if [ ${gpus} -gt 1 ]; then
        trainer='torchrun --standalone --nproc_per_node ${gpus} -m hetfield.cli.app'
    fi
    \$trainer train ${meta.id} --data ${dataset} --config ${meta.id}.yaml --batch-size "\$batch_size" \$load

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: \$(hetfield --version | sed 's/^hetfield //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p ${meta.id}
    touch ${meta.id}/config.yaml ${meta.id}/metrics.jsonl
    batch_size=4

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: stub
    END_VERSIONS
    """
}
