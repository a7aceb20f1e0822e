/*
 * ANALYZE: latent analysis, volumes and report at the epoch CONVERGENCE recommends.
 *
 *   in : [ meta, run dir, convergence dir, dataset metadata dir (SETUP's `metadata`: no image cache) ]
 *   out: [ meta, analysis dir ]   (summary.json, PNGs, volumes/*.mrc, STAR exports, report.html)
 *
 * `--epoch auto --convergence DIR` takes the epoch that CONVERGENCE recommends; the dataset's
 * metadata is staged (`--data`) because the path recorded in the run is the TRAIN task's, which this
 * task may not see (cloud executors): it holds the particle table the STAR exports are written from.
 * The image cache is not staged: an analysis reads no image.
 * Nothing is written into the staged run directory.
 */
process ANALYZE {
    tag "${meta.id}"
    label 'process_medium'

    input:
    tuple val(meta), path(run, stageAs: 'staged/*'), path(convergence, stageAs: 'convergence/*'), path(dataset, stageAs: 'dataset/*')

    output:
    tuple val(meta), path("analysis_${meta.id}"), emit: analysis
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus}
    export MPLCONFIGDIR="\$PWD/.cache/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba" XDG_CACHE_HOME="\$PWD/.cache"
    hetfield analyze ${run} --epoch auto --convergence ${convergence} --data ${dataset} --out analysis_${meta.id} ${args}

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
