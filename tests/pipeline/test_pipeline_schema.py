"""nextflow_schema.json is a valid JSON Schema and documents exactly the params of nextflow.config.

The params are read with nfscript.parse_params (tested below on its own): literal defaults of the
top-level `params { }` block. Every schema property must be a param and vice versa, with the same
default and a matching type; the defaults must validate against the schema; every params.x that
the pipeline reads or a profile/config sets must be declared.
"""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

import nfscript
from nfscript import REPO

JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads((REPO / "nextflow_schema.json").read_text())


@pytest.fixture(scope="module")
def params() -> dict:
    return nfscript.parse_params((REPO / "nextflow.config").read_text())


def schema_properties(schema: dict) -> dict[str, dict]:
    props: dict[str, dict] = {}
    groups = [schema] + list(schema.get("$defs", {}).values())
    for group in groups:
        for name, prop in group.get("properties", {}).items():
            assert name not in props, f"{name} is documented twice"
            props[name] = prop
    return props


def test_schema_is_valid_draft_2020_12(schema):
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    refs = {ref["$ref"] for ref in schema["allOf"]}
    assert refs == {f"#/$defs/{name}" for name in schema["$defs"]}, "every $defs group is referenced from allOf"


def test_schema_matches_config_params_one_to_one(schema, params):
    props = schema_properties(schema)
    assert sorted(props) == sorted(params), (
        f"only in schema: {sorted(set(props) - set(params))}; only in nextflow.config: {sorted(set(params) - set(props))}"
    )
    for name, prop in props.items():
        assert prop.get("description"), f"{name}: no description"
        if params[name] is None:  # not given: nf-schema skips null values, the schema has no default
            assert "default" not in prop and prop["type"] == "string", f"{name}: a null param is an optional string without a default"
            continue
        assert "default" in prop, f"{name}: no default"
        assert prop["default"] == params[name], f"{name}: schema default {prop['default']!r} != config {params[name]!r}"
        assert prop["type"] == JSON_TYPES[type(params[name])], f"{name}: type {prop['type']} but default {params[name]!r}"


def given(params: dict) -> dict:
    """The params nf-schema validates: it skips null values (and checks '' like any other string)."""
    return {name: value for name, value in params.items() if value is not None}


def test_config_defaults_validate_against_schema(schema, params):
    Draft202012Validator(schema).validate(given(params))


def test_path_params_are_null_when_not_given(schema, params):
    """nf-schema reads '' as a path (Nextflow's file('') fails), so path params default to null."""
    for name, prop in schema_properties(schema).items():
        if prop.get("format") in ("file-path", "file-path-pattern", "directory-path", "path") and name != "outdir":
            assert params[name] is None, f"params.{name} = {params[name]!r}: use null"
    assert schema_properties(schema)["input"]["format"] == "file-path-pattern", "--input takes a glob of several datasets"


@pytest.mark.parametrize(
    "values",
    [{"zdim": "8,x"}, {"zdim": "8,"}, {"epochs": "0"}, {"epochs": "2.5"}, {"batch_size": "x"},
     {"settings": "lr"}, {"settings": "lr=1e-4;rm -rf x"}, {"settings": "lr=1e-4,"}, {"settings": "lr=$(id)"}],
)
def test_schema_rejects_bad_values(schema, params, values):
    assert not Draft202012Validator(schema).is_valid({**given(params), **values})


@pytest.mark.parametrize(
    "values",
    [{"beta": "0.1, 1,1e-2", "n_classes": "1,3"}, {"beta": "", "zdim": "", "n_classes": ""}, {"epochs": "30", "batch_size": "8"},
     {"settings": "lr=1e-4, field_hidden=128,device=cuda:0"}, {"settings": "dose_weight=false"}],
)
def test_schema_accepts_good_values(schema, params, values):
    Draft202012Validator(schema).validate({**given(params), **values})


def test_the_pipeline_has_no_training_defaults_of_its_own(params):
    """Every run setting defaults to hetfield's own (empty here): one set of defaults."""
    for name in ("beta", "zdim", "n_classes", "epochs", "batch_size", "settings"):
        assert params[name] == "", f"params.{name} = {params[name]!r}: leave it to hetfield's default"
    assert "train_args" not in params, "training options are plan settings, not extra TRAIN arguments"


def test_every_param_used_or_set_is_declared(params):
    """A typo in main.nf, a module or a profile (params.epoch) would silently read null."""
    used: dict[str, set[str]] = {}
    sources = [
        REPO / "main.nf", *sorted((REPO / "modules").rglob("main.nf")), *sorted((REPO / "subworkflows").rglob("main.nf")),
        REPO / "nextflow.config", *sorted((REPO / "conf").glob("*.config")),
    ]
    for path in sources:
        text = path.read_text()
        for name in nfscript.params_referenced(text) | nfscript.params_assigned(text):
            used.setdefault(name, set()).add(str(path.relative_to(REPO)))
    undeclared = {name: sorted(where) for name, where in used.items() if name not in params}
    assert not undeclared, undeclared
    read = set().union(*(nfscript.params_referenced(p.read_text()) for p in sources))
    assert not set(params) - read, f"declared but never read: {sorted(set(params) - read)}"


# -- the params parser itself ----------------------------------------------------------------------


def test_parse_params_reads_literals_and_ignores_comments():
    text = """
    // a comment with params { x = 1 }
    manifest { name = 'x' }
    params {
        input   = ''            // trailing comment
        outdir  = "results"
        epochs  = 20
        lr      = 1.5e-4
        flag    = false
        nothing = null
        url     = 'http://x/y'  /* block */
    }
    params.extra = 'e'
    profiles { test { params.epochs = 2 } }
    """
    assert nfscript.parse_params(text) == {
        "input": "", "outdir": "results", "epochs": 20, "lr": 1.5e-4, "flag": False, "nothing": None, "url": "http://x/y", "extra": "e",
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("params {\n  a = 1\n  a = 2\n}", "set twice"),
        ("params {\n  a = \"${projectDir}/x\"\n}", "interpolated"),
        ("params {\n  a = 4.GB\n}", "not a literal"),
        ("params {\n  nested { b = 1 }\n}", "cannot read"),
    ],
)
def test_parse_params_refuses_what_it_cannot_read(text, message):
    with pytest.raises(nfscript.ParseError, match=message):
        nfscript.parse_params(text)


def test_params_assigned_finds_profiles_and_blocks():
    text = "profiles {\n  test {\n    params.epochs = 2\n    params {\n      beta = '1'\n    }\n  }\n}\nx = params.other"
    assert nfscript.params_assigned(text) == {"epochs", "beta"}
    assert nfscript.params_referenced(text) == {"epochs", "other"}
