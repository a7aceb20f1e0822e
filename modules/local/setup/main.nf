/*
 * SETUP: validate the particles and preprocess them once (window, Hartley transform, normalise)
 * into a dataset directory that every TRAIN task reads memory-mapped.
 *
 *   in : [ meta, particles (STAR / .cs), data dir where image paths are resolved ]
 *   out: [ meta, dataset dir ]            what TRAIN reads (the image cache included)
 *        [ meta, dataset metadata dir ]   the same dataset without images.npy, for ANALYZE: its
 *                                          names, poses, CTF and particle table are all an analysis
 *                                          reads (hetfield.data.cache.METADATA_PATHS), and staging
 *                                          the image cache to every analysis task is costly on cloud
 *                                          executors
 */
process SETUP {
    tag "${meta.id}"
    label 'process_medium'

    input:
    tuple val(meta), path(particles), path(datadir)

    output:
    tuple val(meta), path("dataset_${meta.id}"), emit: dataset
    tuple val(meta), path("metadata_${meta.id}"), emit: metadata
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus}
    export MPLCONFIGDIR="\$PWD/.cache/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba" XDG_CACHE_HOME="\$PWD/.cache"
    hetfield setup dataset_${meta.id} --particles ${particles} --datadir ${datadir} ${args}
    mkdir metadata_${meta.id}
    cp -R dataset_${meta.id}/dataset.yaml dataset_${meta.id}/arrays.npz dataset_${meta.id}/particles.star dataset_${meta.id}/source metadata_${meta.id}/

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: \$(hetfield --version | sed 's/^hetfield //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p dataset_${meta.id} metadata_${meta.id}
    touch dataset_${meta.id}/dataset.yaml metadata_${meta.id}/dataset.yaml

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: stub
    END_VERSIONS
    """
}
