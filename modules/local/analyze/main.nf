/*
 * ANALYZE: latent analysis, volumes and report at the epoch CONVERGENCE recommends.
 *
 *   in : [ meta, run dir, convergence dir ]
 *   out: [ meta, analysis dir ]   (summary.json, PNGs, volumes/*.mrc, STAR exports, report.html)
 *
 * `--epoch auto` reads RUN/convergence/convergence.json. The staged run directory is read-only
 * to this task, so the script builds a run directory of links (the run's files plus
 * `convergence` -> the CONVERGENCE output) and analyzes that, writing to its own --out.
 */
process ANALYZE {
    tag "${meta.id}"
    label 'process_medium'
    container params.container

    input:
    tuple val(meta), path(run, stageAs: 'staged/*'), path(convergence)

    output:
    tuple val(meta), path("analysis_${meta.id}"), emit: analysis
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus}
    mkdir -p run_${meta.id}
    ln -s "\$PWD/${run}"/* run_${meta.id}/
    ln -s "\$PWD/${convergence}" run_${meta.id}/convergence

    hetfield analyze run_${meta.id} --epoch auto --out analysis_${meta.id} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: \$(hetfield --version | sed 's/^hetfield //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p analysis_${meta.id}
    echo '{}' > analysis_${meta.id}/summary.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: stub
    END_VERSIONS
    """
}
