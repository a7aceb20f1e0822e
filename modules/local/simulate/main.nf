/*
 * SIMULATE: a ground-truth dataset from `hetfield simulate` (used by `-profile test` and for
 * benchmarking). Writes particles.star, the image stacks and the true volumes into one directory.
 *
 *   in : meta                                  [id]
 *   out: [ meta, particles STAR, data dir ]    ready for SETUP
 */
process SIMULATE {
    tag "${meta.id}"
    label 'process_low'

    input:
    val meta

    output:
    tuple val(meta), path("simulated_${meta.id}/particles.star"), path("simulated_${meta.id}"), emit: particles
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus}
    export MPLCONFIGDIR="\$PWD/.cache/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba" XDG_CACHE_HOME="\$PWD/.cache"
    hetfield simulate simulated_${meta.id} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: \$(hetfield --version | sed 's/^hetfield //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p simulated_${meta.id}
    touch simulated_${meta.id}/particles.star

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: stub
    END_VERSIONS
    """
}
