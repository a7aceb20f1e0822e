#!/usr/bin/env nextflow
/*
 * hetfield: hyperparameter sweeps of neural-field heterogeneity analysis (cryo-ET / cryo-EM).
 *
 *   particles ──► SETUP ──► dataset ──┐
 *   (or SIMULATE)                     ├─► TRAIN ──► run ──┬───────────────────────────┐
 *   grid ──► PLAN ──► plan.csv ───────┘  (dataset × grid)  └─► CONVERGENCE ──► conv ──┴─► ANALYZE (--epoch auto)
 *   (or --plan plan.csv)                                                                   │
 *                                   every run, convergence and analysis ──► SUMMARIZE ◄─────┘
 *
 * Every step is one `hetfield` command (modules/local/<step>/main.nf); this file only wires, names
 * and stages. Hyperparameters travel in each element's meta map; run ids come from
 * `hetfield sweep plan`, the same code `hetfield sweep run` uses on one machine.
 *
 * Needs Nextflow >= 25.10 (workflow outputs: the `publish:` section and the `output {}` block).
 * Written to the strict syntax (NXF_SYNTAX_PARSER=v2, the default from 26.04); it uses no typed
 * declarations, so the 25.10 default parser runs it too. `nextflow lint .` is the authority.
 */

include { SIMULATE    } from './modules/local/simulate'
include { SETUP       } from './modules/local/setup'
include { PLAN        } from './modules/local/plan'
include { TRAIN       } from './modules/local/train'
include { CONVERGENCE } from './modules/local/convergence'
include { ANALYZE     } from './modules/local/analyze'
include { SUMMARIZE   } from './modules/local/summarize'

workflow {
    main:
    // Command-line values arrive as strings under the strict parser: read flags explicitly.
    def simulate = params.simulate.toString().toBoolean()
    if (!params.input && !simulate) {
        error "Give the particles with --input particles.star (and --datadir for the image stacks), or --simulate true for a simulated dataset."
    }
    if (params.input && simulate) {
        error "Give either --input or --simulate true, not both."
    }

    // 1. Particles ───────────────────────────────────────── [ meta(id), particles file, data dir ]
    //    Image paths inside the STAR file are resolved against --datadir (default: the file's folder).
    ch_input = params.input
        ? channel.fromPath(params.input, checkIfExists: true).map { particles ->
            def datadir = params.datadir ? file(params.datadir, checkIfExists: true) : particles.parent
            [[id: params.dataset_name ?: particles.baseName], particles, datadir]
        }
        : channel.empty()
    SIMULATE(simulate ? channel.of([id: params.dataset_name ?: 'simulated']) : channel.empty())
    ch_particles = ch_input.mix(SIMULATE.out.particles)

    // 2. Prepared dataset (preprocessed once, read by every run) ───────── [ meta(id), dataset dir ]
    SETUP(ch_particles)

    // 3. The grid: one CSV row per run, run ids computed by the CLI ───────────────────── plan.csv
    PLAN(params.plan ? channel.empty() : channel.of([params.beta, params.zdim, params.n_classes]))
    ch_plan = params.plan ? channel.fromPath(params.plan, checkIfExists: true) : PLAN.out.plan

    //    rows → meta maps ──────────────────────────── [ id, run_id, beta, zdim, n_classes, … ]
    ch_grid = ch_plan
        .splitCsv(header: true)
        .map { row ->
            if (!row.run_id) {
                error "Sweep plan rows need a run_id column (and beta, zdim, n_classes): got ${row}"
            }
            [id: row.run_id] + row
        }

    // 4. Training: dataset × grid ────────────────────── [ meta + dataset id, dataset dir ] → run dir
    ch_train = SETUP.out.dataset
        .combine(ch_grid)
        .map { dataset_meta, dataset, run_meta -> [run_meta + [dataset: dataset_meta.id], dataset] }
    TRAIN(ch_train, params.epochs, params.batch_size)

    // 5. Convergence of each run ───────────────────────────────── [ meta, run dir ] → convergence dir
    CONVERGENCE(TRAIN.out.run)

    // 6. Analysis at the recommended epoch ─── [ meta, run dir, convergence dir, dataset dir ] → analysis dir
    ch_datasets = SETUP.out.dataset.map { dataset_meta, dataset -> [dataset_meta.id, dataset] }
    ch_analyze = TRAIN.out.run
        .join(CONVERGENCE.out.convergence)
        .map { meta, run, conv -> [meta.dataset, meta, run, conv] }
        .combine(ch_datasets, by: 0)
        .map { dataset_id, meta, run, conv, dataset -> [meta, run, conv, dataset] }
    ANALYZE(ch_analyze)

    // 7. One record per run ──────────────────────── [ meta, run dir, convergence dir, analysis dir ]
    ch_results = TRAIN.out.run
        .join(CONVERGENCE.out.convergence)
        .join(ANALYZE.out.analysis)

    // 8. Sweep summary over every run ──────── [ run dirs ], [ convergence dirs ], [ analysis dirs ]
    SUMMARIZE(
        ch_results.map { meta, run, conv, analysis -> run }.collect(),
        ch_results.map { meta, run, conv, analysis -> conv }.collect(),
        ch_results.map { meta, run, conv, analysis -> analysis }.collect()
    )

    // Software versions of every step, one file ─────────────────── pipeline_info/versions.yml
    SIMULATE.out.versions
        .mix(SETUP.out.versions, PLAN.out.versions, TRAIN.out.versions)
        .mix(CONVERGENCE.out.versions, ANALYZE.out.versions, SUMMARIZE.out.versions)
        .unique { versions -> versions.text }
        .collectFile(name: 'versions.yml', sort: true, storeDir: "${params.outdir}/pipeline_info")

    // Published records: one map per run, which is also a row of the runs.csv index
    //   ──────────────── [ run_id, beta, zdim, n_classes, …, dataset, run, convergence, analysis ]
    ch_published_runs = ch_results.map { meta, run, conv, analysis ->
        def hyperparameters = meta.findAll { key, value -> key != 'id' && key != 'run_id' }
        [run_id: meta.id] + hyperparameters + [run: run, convergence: conv, analysis: analysis]
    }

    publish:
    dataset = SETUP.out.dataset
    plan = ch_plan
    runs = ch_published_runs
    summary = SUMMARIZE.out.summary
}

/*
 * Published layout (copied; `outputDir`, set from --outdir):
 *
 *   datasets/<dataset>/            prepared dataset (reuse it with `hetfield train --data`)
 *   plan.csv                       the sweep grid
 *   runs/<run_id>/run/             the run directory (config.yaml, metrics.jsonl, weights.N.pt, latent.N.npz)
 *   runs/<run_id>/convergence/     convergence.json (recommended epoch), plots, report.html
 *   runs/<run_id>/analysis/        summary.json, plots, volumes, report.html at that epoch
 *   runs.csv                       index: one row per run, hyperparameters + the three paths above
 *   summary/                       sweep table and report
 *   pipeline_info/versions.yml     hetfield version of every step
 */
output {
    dataset {
        path { meta, dataset -> dataset >> "datasets/${meta.id}" }
    }
    plan {
        path '.'
    }
    runs {
        path { run ->
            run.run >> "runs/${run.run_id}/run"
            run.convergence >> "runs/${run.run_id}/convergence"
            run.analysis >> "runs/${run.run_id}/analysis"
        }
        index {
            path 'runs.csv'
            header true
        }
    }
    summary {
        path '.'
    }
}
