/*
 * Evaluate script blocks with Groovy itself, to check tests/pipeline/nfscript.py's renderer.
 *
 * Usage: java -cp 'groovy/lib/*' groovy.ui.GroovyMain RenderCheck.groovy CASES.json
 * CASES.json: [{"context": {...}, "defs": [[name, expr], ...], "gstring": "..."}, ...]
 * Prints a JSON list of the rendered strings (before Nextflow's indent stripping).
 */
import groovy.json.JsonOutput
import groovy.json.JsonSlurper

def cases = new JsonSlurper().parse(new File(args[0]))
def rendered = cases.collect { c ->
    def shell = new GroovyShell(new Binding(new LinkedHashMap(c.context)))
    def code = c.defs.collect { d -> "def ${d[0]} = ${d[1]}" }.join('\n') + '\nreturn """' + c.gstring + '""".toString()'
    shell.evaluate(code)
}
println JsonOutput.toJson(rendered)
