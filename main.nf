#!/usr/bin/env nextflow
/*
 * hetfield: hyperparameter sweeps of neural-field heterogeneity analysis (cryo-ET / cryo-EM).
 *
 *   particles ──► SETUP ──► dataset ──┐
 *   (or SIMULATE)                     ├─► SWEEP_RUN: TRAIN ──► CONVERGENCE ──► ANALYZE (--epoch auto)
 *   grid ──► PLAN ──► plan.csv ───────┘   (dataset × plan row, one chain per run)         │
 *   (or --plan plan.csv)                                                                   │
 *                                   every run, convergence and analysis ──► SUMMARIZE ◄────┘
 *
 * Every step is one `hetfield` command (modules/local/<step>/main.nf); this file only wires, names
 * and stages. The plan is the one source of a run's settings: PLAN writes every setting into it
 * (`hetfield sweep plan --set`), TRAIN trains exactly its row (`hetfield sweep config`), the code
 * `hetfield sweep run` uses on one machine, and runs.csv publishes the row that was applied.
 *
 * Needs Nextflow >= 25.10 (workflow outputs: the `publish:` section and the `output {}` block) and
 * the nf-schema plugin (nextflow.config pins it; docs/pipeline.md says how to install it offline).
 * Written to the strict syntax (NXF_SYNTAX_PARSER=v2, the default from 26.04); it uses no typed
 * declarations, so the 25.10 default parser runs it too. `nextflow lint .` is the authority.
 */

include { validateParameters } from 'plugin/nf-schema'

include { SIMULATE  } from './modules/local/simulate'
include { SETUP     } from './modules/local/setup'
include { PLAN      } from './modules/local/plan'
include { SWEEP_RUN } from './subworkflows/local/sweep_run'
include { SUMMARIZE } from './modules/local/summarize'

workflow {
    main:
    // Command-line values may arrive as strings under the strict parser: read flags explicitly.
    if (params.validate_params.toString().toBoolean()) {
        validateParameters()
    }
    def simulate = params.simulate.toString().toBoolean()
    if (!params.input && !simulate) {
        error "Give the particles with --input particles.star (and --datadir for the image stacks), or --simulate true for a simulated dataset."
    }
    if (params.input && simulate) {
        error "Give either --input or --simulate true, not both."
    }
    if (params.plan && (params.beta || params.zdim || params.n_classes || params.epochs || params.batch_size || params.settings)) {
        error "--plan ${params.plan} holds every setting of its runs: drop --beta/--zdim/--n_classes/--epochs/--batch_size/--settings, or make the plan with them (hetfield sweep plan --set option=value)."
    }

    // 1. Particles ─────────────────────────────── [ meta(id, several), particles file, data dir ]
    //    Image paths inside the STAR file are resolved against --datadir (default: the file's folder).
    //    With several inputs (a glob), run ids are qualified by their dataset (`several`).
    ch_input = params.input
        ? channel.fromPath(params.input, checkIfExists: true)
            .toSortedList()
            .flatMap { files ->
                def names = files.collect { particles -> params.dataset_name ?: particles.baseName }
                def clashes = names.findAll { name -> names.count(name) > 1 }.unique()
                if (clashes) {
                    error "--input ${params.input}: several files give the dataset name ${clashes.join(', ')}; rename them${params.dataset_name ? ' (and drop --dataset_name, which names one dataset)' : ''}."
                }
                files.collect { particles ->
                    def datadir = params.datadir ? file(params.datadir, checkIfExists: true) : particles.parent
                    [[id: params.dataset_name ?: particles.baseName, several: files.size() > 1], particles, datadir]
                }
            }
        : channel.empty()
    SIMULATE(simulate ? channel.of([id: params.dataset_name ?: 'simulated', several: false]) : channel.empty())
    ch_particles = ch_input.mix(SIMULATE.out.particles)

    // 2. Prepared dataset (preprocessed once, read by every run) ───────── [ meta(id), dataset dir ]
    SETUP(ch_particles)

    // 3. The plan: one CSV row per run with every setting, run ids computed by the CLI ── plan.csv
    //    (settings shared by every run reach PLAN as `--set` options: conf/modules.config)
    PLAN(params.plan ? channel.empty() : channel.of([params.beta, params.zdim, params.n_classes]))
    ch_plan = params.plan ? channel.fromPath(params.plan, checkIfExists: true) : PLAN.out.plan

    //    rows → meta maps ────────────────────────── [ run_id, beta, zdim, n_classes, … ]
    ch_grid = ch_plan
        .splitCsv(header: true)
        .map { row ->
            if (!row.run_id) {
                error "Sweep plan rows need a run_id column (and beta, zdim, n_classes): got ${row}"
            }
            row
        }

    // 4. One chain per run: dataset × plan row ─── [ meta, dataset dir, metadata dir, plan.csv ] per run
    //    meta.id names the run's task outputs and its published folder: the plan's run_id, or
    //    `<dataset>.<run_id>` with several inputs so that runs of different datasets never collide.
    ch_runs = SETUP.out.dataset
        .join(SETUP.out.metadata)
        .combine(ch_grid)
        .combine(ch_plan)
        .map { dataset_meta, dataset, metadata, row, plan ->
            def id = dataset_meta.several ? "${dataset_meta.id}.${row.run_id}".toString() : row.run_id
            [[id: id] + row + [dataset: dataset_meta.id], dataset, metadata, plan]
        }
    SWEEP_RUN(ch_runs)
    ch_results = SWEEP_RUN.out.results

    // 5. Sweep summary over every run (sorted: a -resume sees the same inputs in the same order)
    SUMMARIZE(
        ch_results.map { meta, run, conv, analysis, batch_size -> run }.collect(sort: true),
        ch_results.map { meta, run, conv, analysis, batch_size -> conv }.collect(sort: true),
        ch_results.map { meta, run, conv, analysis, batch_size -> analysis }.collect(sort: true)
    )

    // Software versions of every step, one file ────────────────── pipeline_info/versions.yml
    ch_versions = SIMULATE.out.versions
        .mix(SETUP.out.versions, PLAN.out.versions, SWEEP_RUN.out.versions, SUMMARIZE.out.versions)
        .unique { versions -> versions.text }
        .collectFile(name: 'versions.yml', sort: true)

    // Published records: one map per run, which is also a row of the runs.csv index: the plan row
    // that was applied, with the batch size TRAIN used (halved by out-of-memory retries)
    //   ──────────── [ run_id, beta, zdim, n_classes, …, batch_size, dataset, run, convergence, analysis ]
    ch_published_runs = ch_results.map { meta, run, conv, analysis, batch_size ->
        def settings = meta.findAll { key, value -> !(key in ['id', 'run_id', 'dataset']) }
        [run_id: meta.id] + settings + [batch_size: batch_size, dataset: meta.dataset, run: run, convergence: conv, analysis: analysis]
    }

    publish:
    dataset = SETUP.out.dataset
    plan = ch_plan
    runs = ch_published_runs
    summary = SUMMARIZE.out.summary
    versions = ch_versions
}

/*
 * Published layout (copied; `outputDir`, set from --outdir):
 *
 *   datasets/<dataset>/            prepared dataset (reuse it with `hetfield train --data`)
 *   plan.csv                       the sweep plan: every setting of every run
 *   runs/<run_id>/run/             the run directory (config.yaml, metrics.jsonl, weights.N.pt, latent.N.npz)
 *   runs/<run_id>/convergence/     convergence.json (recommended epoch), plots, report.html
 *   runs/<run_id>/analysis/        summary.json, plots, volumes, report.html at that epoch
 *   runs.csv                       index: one row per run, its applied settings + the three paths above
 *   summary/                       sweep table and report
 *   pipeline_info/versions.yml     hetfield version of every step (trace, report and timeline
 *                                  are written there too: nextflow.config)
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
    versions {
        path 'pipeline_info'
    }
}
