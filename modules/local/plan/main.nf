/*
 * PLAN: the sweep grid, one CSV row per run (run_id,beta,zdim,n_classes,…), from the CLI so that
 * run ids are computed in one tested place (`hetfield sweep plan`, the same code `sweep run` uses).
 *
 *   in : [ beta, zdim, n_classes ]   comma-separated lists, e.g. '0.1,1' '4,8' '1,3'
 *   out: plan.csv
 */
process PLAN {
    tag "beta=${beta} zdim=${zdim} n_classes=${n_classes}"
    label 'process_single'
    container params.container

    input:
    tuple val(beta), val(zdim), val(n_classes)

    output:
    path 'plan.csv', emit: plan
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    hetfield sweep plan --beta '${beta}' --zdim '${zdim}' --n-classes '${n_classes}' --out plan.csv ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        hetfield: \$(hetfield --version | sed 's/^hetfield //')
    END_VERSIONS
    """

    stub:
    """
    echo 'run_id,beta,zdim,n_classes' > plan.csv
    for b in \$(echo '${beta}' | tr ',' ' '); do
        for z in \$(echo '${zdim}' | tr ',' ' '); do
            for k in \$(echo '${n_classes}' | tr ',' ' '); do
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
