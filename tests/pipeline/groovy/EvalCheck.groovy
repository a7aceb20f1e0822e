/*
 * Evaluate Groovy expressions (e.g. a config closure's body) with given variables, to check what a
 * dynamic config value gives without running Nextflow.
 *
 * Usage: java -cp 'groovy/lib/*' groovy.ui.GroovyMain EvalCheck.groovy CASES.json
 * CASES.json: [{"binding": {"params": {...}}, "code": "..."}, ...]
 * Prints a JSON list of the results as strings.
 */
import groovy.json.JsonOutput
import groovy.json.JsonSlurper

def cases = new JsonSlurper().parse(new File(args[0]))
def results = cases.collect { c ->
    new GroovyShell(new Binding(new LinkedHashMap(c.binding))).evaluate(c.code).toString()
}
println JsonOutput.toJson(results)
