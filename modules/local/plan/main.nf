/*
 * PLAN: the sweep grid, one CSV row per run (run_id, beta, zdim, n_classes, then one column per
 * setting given with `--set`), from the CLI so that run ids and settings are made in one tested
 * place (`hetfield sweep plan`, the same code `sweep run` uses). An empty axis is left to
 * `hetfield sweep plan`'s own default (beta 1/zdim, zdim 8, one class), so the pipeline has none.
 *
 *   in : [ beta, zdim, n_classes ]   comma-separated lists, e.g. '0.1,1' '4,8' '1,3', or ''
 *   out: plan.csv
 *
 * Settings shared by every run (epochs, batch size, any training option) come as ext.args
 * (`--set option=value`, conf/modules.config builds them from --epochs, --batch_size, --settings).
 */
process PLAN {
    tag "beta=${beta} zdim=${zdim} n_classes=${n_classes}"
    label 'process_single'

    input:
    tuple val(beta), val(zdim), val(n_classes)

    output:
    path 'plan.csv', emit: plan
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    export MPLCONFIGDIR="\$PWD/.cache/matplotlib" NUMBA_CACHE_DIR="\$PWD/.cache/numba" XDG_CACHE_HOME="\$PWD/.cache"
    beta='${beta}'
    zdim='${zdim}'
    n_classes='${n_classes}'

    hetfield sweep plan \${beta:+--beta "\$beta"} \${zdim:+--zdim "\$zdim"} \${n_classes:+--n-classes "\$n_classes"} --out plan.csv ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: \$(hetfield --version | sed 's/^hetfield //')
    END_VERSIONS
    """

    stub:
    """
    beta='${beta}'
    zdim='${zdim}'
    n_classes='${n_classes}'
    echo 'run_id,beta,zdim,n_classes' > plan.csv
    for b in \$(echo "\${beta:-auto}" | tr ',' ' '); do
        for z in \$(echo "\${zdim:-8}" | tr ',' ' '); do
            for k in \$(echo "\${n_classes:-1}" | tr ',' ' '); do
                echo "stub-b\${b}-z\${z}-k\${k},\${b},\${z},\${k}" >> plan.csv
            done
        done
    done

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: stub
    END_VERSIONS
    """
}
