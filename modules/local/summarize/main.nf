/*
 * SUMMARIZE: one table and report over the whole sweep. `hetfield sweep summarize` joins the
 * runs, convergence and analysis directories by the run_id every JSON carries.
 *
 *   in : [ run dirs ], [ convergence dirs ], [ analysis dirs ]   (all runs, collected)
 *   out: summary dir
 */
process SUMMARIZE {
    tag "sweep"
    label 'process_low'

    input:
    path runs
    path convergence
    path analysis

    output:
    path 'summary', emit: summary
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus}
    export MPLCONFIGDIR="\$PWD/.cache/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba" XDG_CACHE_HOME="\$PWD/.cache"
    hetfield sweep summarize ${runs} ${convergence} ${analysis} --out summary ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: \$(hetfield --version | sed 's/^hetfield //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p summary
    touch summary/summary.csv

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: stub
    END_VERSIONS
    """
}
