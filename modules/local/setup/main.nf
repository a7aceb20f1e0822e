/*
 * SETUP: validate the particles and preprocess them once (window, Hartley transform, normalise)
 * into a dataset directory that every TRAIN task reads memory-mapped.
 *
 *   in : [ meta, particles (STAR / .cs), data dir where image paths are resolved ]
 *   out: [ meta, dataset dir ]
 */
process SETUP {
    tag "${meta.id}"
    label 'process_medium'

    input:
    tuple val(meta), path(particles), path(datadir)

    output:
    tuple val(meta), path("dataset_${meta.id}"), emit: dataset
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus}
    export MPLCONFIGDIR="\$PWD/.cache/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba" XDG_CACHE_HOME="\$PWD/.cache"
    hetfield setup dataset_${meta.id} --particles ${particles} --datadir ${datadir} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: \$(hetfield --version | sed 's/^hetfield //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p dataset_${meta.id}
    touch dataset_${meta.id}/dataset.yaml

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: stub
    END_VERSIONS
    """
}
