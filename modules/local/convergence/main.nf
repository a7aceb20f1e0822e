/*
 * CONVERGENCE: loss curves, latent drift between epochs and volume agreement across epochs,
 * with a recommended epoch, written to its own directory (never into the staged run).
 *
 *   in : [ meta, run dir ]
 *   out: [ meta, convergence dir ]   (convergence.json with the recommended epoch, PNGs, report.html)
 */
process CONVERGENCE {
    tag "${meta.id}"
    label 'process_medium'

    input:
    tuple val(meta), path(run)

    output:
    tuple val(meta), path("convergence_${meta.id}"), emit: convergence
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus}
    export MPLCONFIGDIR="\$PWD/.cache/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba" XDG_CACHE_HOME="\$PWD/.cache"
    hetfield convergence ${run} --out convergence_${meta.id} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: \$(hetfield --version | sed 's/^hetfield //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p convergence_${meta.id}
    echo '{}' > convergence_${meta.id}/convergence.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: stub
    END_VERSIONS
    """
}
