/*
 * Parse Nextflow scripts and configs as Groovy 4 up to the CONVERSION phase (syntax -> AST), all
 * files in one JVM. Nextflow's DSL (process X { input: ... }, workflow { main: ... publish: ... },
 * output { }, include { X } from '...', config blocks, withLabel: selectors) is plain Groovy
 * syntax: method calls with closures, statement labels and command expressions. No rewriting is
 * done, so a real syntax error (unbalanced brace, bad string, stray token) fails here.
 *
 * Usage: java -cp 'groovy/lib/*' groovy.ui.GroovyMain ParseCheck.groovy FILE...
 * Prints one JSON object per file: {"file": ..., "ok": true|false, "error": ...}.
 */
import groovy.json.JsonOutput
import org.codehaus.groovy.control.CompilationFailedException
import org.codehaus.groovy.control.CompilationUnit
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.control.Phases

args.each { String name ->
    def file = new File(name)
    def result = [file: name, ok: true, error: null]
    try {
        def unit = new CompilationUnit(new CompilerConfiguration())
        unit.addSource(file.name, file.getText('UTF-8'))
        unit.compile(Phases.CONVERSION)
    }
    catch (CompilationFailedException e) {
        result.ok = false
        result.error = e.message
    }
    println JsonOutput.toJson(result)
}
