/*
 * SWEEP_RUN: the chain of one run, TRAIN → CONVERGENCE → ANALYZE (at the recommended epoch), for
 * every run it is given: what `hetfield sweep run` does for each plan row on one machine.
 *
 *   take: [ meta (id, run_id, plan columns, dataset), dataset dir, dataset metadata dir, plan.csv ]   one per run
 *   emit: results  [ meta, run dir, convergence dir, analysis dir, batch size used ]
 *         versions versions.yml of every task
 */

include { TRAIN       } from '../../../modules/local/train'
include { CONVERGENCE } from '../../../modules/local/convergence'
include { ANALYZE     } from '../../../modules/local/analyze'

workflow SWEEP_RUN {
    take:
    ch_runs

    main:
    TRAIN(ch_runs.map { meta, dataset, metadata, plan -> [meta, dataset, plan] })
    CONVERGENCE(TRAIN.out.run)

    // The dataset's metadata is staged into ANALYZE (not read from the path the run records, which
    // is the TRAIN task's): it holds the particle table the STAR exports are written from. The
    // image cache stays behind: an analysis reads no image.
    ch_metadata = ch_runs.map { meta, dataset, metadata, plan -> [meta, metadata] }
    ANALYZE(TRAIN.out.run.join(CONVERGENCE.out.convergence).join(ch_metadata))

    ch_results = TRAIN.out.run
        .join(CONVERGENCE.out.convergence)
        .join(ANALYZE.out.analysis)
        .join(TRAIN.out.batch_size)

    emit:
    results = ch_results
    versions = TRAIN.out.versions.mix(CONVERGENCE.out.versions, ANALYZE.out.versions)
}
