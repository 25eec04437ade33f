#!/usr/bin/env python3
"""Checks real answers of the vault against its OpenAPI description.

    python3 validate.py OPENAPI.yaml EXCHANGES.json

EXCHANGES.json (written by cli/tests/e2e/openapi.rs):

    {"codes": [[code, status, title], ...],        # the server's CODES table
     "required_codes": [code, ...],                # codes the exchanges must show
     "exchanges": [{"name": "...", "method": "POST", "path": "/v1/tokens",
                    "status": 201, "headers": {"x-request-id": "...", ...},
                    "body": "..."}, ...]}

For each exchange: the operation (method and path template) must be described,
the status must be one of its responses, every required header of that response
must be there and match its schema, the content type must be the described one,
and the body must validate against the response's schema (JSON Schema 2020-12,
as OpenAPI 3.1 says). A path no route serves must answer `404 not_found`, a route
asked with a method it does not serve `405 method_not_allowed`, as the
description's `Problem_<code>` schemas say. Then the description itself is
validated (openapi-spec-validator), its `Problem_<code>` schemas must be exactly
the server's codes with their status and title, every operation must have been
answered with a success at least once, and every required code seen.

Exit 0: all good. 1: a violation (each printed). 2: bad arguments.
3: a Python module is missing (the caller decides whether that fails).

Nothing printed ever holds a card number: bodies are never printed, and a digit
run long enough to be one is masked in every message.
"""

import datetime
import json
import re
import sys

MISSING = 3

try:
    import yaml
    import jsonschema
    from openapi_spec_validator import validate as validate_spec
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"missing Python module: {e.name} ({e})")
    sys.exit(MISSING)

DIGITS = re.compile(r"\d[\d \-]{10,}\d")


def redact(text):
    """Masks every run of 12 or more digits (spaces and dashes between)."""
    return DIGITS.sub("<digits>", str(text))


def escape_pointer(key):
    return key.replace("~", "~0").replace("/", "~1")


FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def is_date_time(value):
    if not isinstance(value, str):
        return True
    # RFC 3339: a full date, `T`, a time and an offset (Python accepts more forms,
    # so the shape is checked first).
    if not re.fullmatch(
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", value
    ):
        raise ValueError("not an RFC 3339 date-time")
    datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


@FORMATS.checks("uri", raises=ValueError)
def is_uri(value):
    if isinstance(value, str) and not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.\-]*:\S+", value):
        raise ValueError("not a URI")
    return True


class Spec:
    def __init__(self, doc):
        self.doc = doc
        # (method, compiled path regex, template, number of parameters)
        self.routes = []
        for template, item in doc.get("paths", {}).items():
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            params = template.count("{")
            for method in item:
                if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
                    self.routes.append((method.upper(), re.compile(pattern), template, params))

    def resolve(self, node, pointer):
        """Follows `$ref`s; returns the node and its JSON pointer in the document."""
        while isinstance(node, dict) and "$ref" in node and len(node) == 1:
            pointer = node["$ref"]
            node = self.doc
            for part in pointer.lstrip("#/").split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node, pointer

    def validator(self, pointer):
        """A validator for the schema at `pointer`, with the whole document as its
        root so every `$ref` resolves."""
        root = dict(self.doc)
        root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        root["$ref"] = pointer
        return jsonschema.Draft202012Validator(root, format_checker=FORMATS)

    def operation(self, method, path):
        """(template, operation, pointer) for a request, or (template, None, None)
        when the path exists with other methods, or (None, None, None)."""
        path = path.split("?", 1)[0]
        matches = sorted(
            (params, template, m) for m, rx, template, params in self.routes if rx.match(path)
        )
        if not matches:
            return None, None, None
        # A literal segment wins over a parameter (`/v1/tokens/batch`).
        best = matches[0][0]
        for params, template, m in matches:
            if params == best and m == method:
                ptr = f"#/paths/{escape_pointer(template)}/{method.lower()}"
                return template, self.doc["paths"][template][method.lower()], ptr
        return matches[0][1], None, None


def check_headers(spec, response, resp_ptr, headers, errors, where):
    for name, header in response.get("headers", {}).items():
        header, hptr = spec.resolve(header, f"{resp_ptr}/headers/{escape_pointer(name)}")
        value = headers.get(name.lower())
        if value is None:
            if header.get("required"):
                errors.append(f"{where}: header `{name}` missing")
            continue
        if "schema" in header:
            v = spec.validator(f"{hptr}/schema")
            for e in v.iter_errors(value):
                errors.append(f"{where}: header `{name}`: {redact(e.message)}")


def check_body(spec, response, resp_ptr, ex, errors, where):
    headers = ex["headers"]
    body = ex.get("body", "")
    content = response.get("content")
    if not content:
        if body:
            errors.append(f"{where}: a body where the description has none")
        return
    ctype = headers.get("content-type")
    if ctype is None:
        errors.append(f"{where}: no content-type")
        return
    essence = ctype.split(";", 1)[0].strip().lower()
    if essence not in content:
        errors.append(
            f"{where}: content-type `{essence}` not described (described: {', '.join(content)})"
        )
        return
    media = content[essence]
    if "schema" not in media:
        return
    if essence == "application/json" or essence.endswith("+json"):
        try:
            instance = json.loads(body)
        except ValueError:
            errors.append(f"{where}: the body is not JSON")
            return
    else:
        instance = body
    v = spec.validator(f"{resp_ptr}/content/{escape_pointer(essence)}/schema")
    for e in sorted(v.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        at = "/".join(str(p) for p in e.absolute_path) or "$"
        errors.append(f"{where}: body at {redact(at)}: {redact(e.message)[:300]}")
        # oneOf failures hide the reason in their context; show the closest.
        for sub in sorted(e.context or [], key=lambda s: -len(list(s.absolute_path)))[:3]:
            subat = "/".join(str(p) for p in sub.absolute_path) or "$"
            errors.append(f"{where}:   - at {redact(subat)}: {redact(sub.message)[:200]}")


def check_problem(spec, code, ex, errors, where):
    """An answer no operation describes: must be the generic problem `code`."""
    ptr = f"#/components/schemas/Problem_{code}"
    if ex["status"] != {"not_found": 404, "method_not_allowed": 405}[code]:
        errors.append(f"{where}: status {ex['status']}, expected the `{code}` problem")
        return
    fake = {
        "headers": {
            "x-request-id": {"$ref": "#/components/headers/RequestId"},
            "cache-control": {"$ref": "#/components/headers/CacheControl"},
        },
        "content": {"application/problem+json": {"schema": {"$ref": ptr}}},
    }
    # Validate through a pointer into the document: put the synthetic response
    # where the validator can reach it.
    spec.doc.setdefault("x-validate", {})[code] = fake
    rptr = f"#/x-validate/{code}"
    check_headers(spec, fake, rptr, ex["headers"], errors, where)
    check_body(spec, fake, rptr, ex, errors, where)
    if code == "method_not_allowed":
        # RFC 9110 §15.5.6: a 405 names the methods the route serves.
        template, _, _ = spec.operation(ex["method"], ex["path"])
        served = {m for m, _, t, _ in spec.routes if t == template}
        allow = {m.strip().upper() for m in ex["headers"].get("allow", "").split(",") if m.strip()}
        if not served <= allow:
            errors.append(f"{where}: `allow` is {sorted(allow)}, the route serves {sorted(served)}")


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    with open(argv[2], encoding="utf-8") as f:
        run = json.load(f)
    errors = []

    try:
        validate_spec(doc)
    except Exception as e:  # the validator raises its own error types
        errors.append(f"the description is not valid OpenAPI: {redact(e)[:500]}")

    spec = Spec(doc)
    schemas = doc.get("components", {}).get("schemas", {})

    # The problem schemas are exactly the server's codes.
    described = {k[len("Problem_"):] for k in schemas if k.startswith("Problem_")}
    served = {c for c, _, _ in run.get("codes", [])}
    for c in sorted(served - described):
        errors.append(f"code `{c}` has no schema Problem_{c}")
    for c in sorted(described - served):
        errors.append(f"schema Problem_{c} describes a code the server does not have")
    for c, status, title in run.get("codes", []):
        s = schemas.get(f"Problem_{c}")
        if not s:
            continue
        consts = {}
        for part in s.get("allOf", []):
            for k, v in part.get("properties", {}).items():
                if "const" in v:
                    consts[k] = v["const"]
        want = {
            "type": f"https://panvault.dev/problems/{c}",
            "title": title,
            "status": status,
            "code": c,
        }
        if consts != want:
            errors.append(f"Problem_{c}: described as {consts}, the server says {want}")

    answered = set()
    codes_seen = set()
    for i, ex in enumerate(run["exchanges"]):
        ex["headers"] = {k.lower(): v for k, v in ex["headers"].items()}
        where = f"[{i}] {ex.get('name', '')}: {ex['method']} {redact(ex['path'])} -> {ex['status']}"
        try:
            code = json.loads(ex.get("body") or "null")
            code = code.get("code") if isinstance(code, dict) else None
        except ValueError:
            code = None
        if code:
            codes_seen.add(code)
        template, op, op_ptr = spec.operation(ex["method"], ex["path"])
        if template is None:
            check_problem(spec, "not_found", ex, errors, where)
            continue
        if op is None:
            check_problem(spec, "method_not_allowed", ex, errors, where)
            continue
        status = str(ex["status"])
        responses = op.get("responses", {})
        key = status if status in responses else f"{status[0]}XX"
        if key not in responses:
            key = "default" if "default" in responses else None
        if key is None:
            errors.append(
                f"{where}: status {status} not described for {ex['method']} {template}"
            )
            continue
        response, resp_ptr = spec.resolve(
            responses[key], f"{op_ptr}/responses/{escape_pointer(key)}"
        )
        before = len(errors)
        check_headers(spec, response, resp_ptr, ex["headers"], errors, where)
        check_body(spec, response, resp_ptr, ex, errors, where)
        if len(errors) == before and 200 <= ex["status"] < 300:
            answered.add((ex["method"], template))

    for method, _, template, _ in spec.routes:
        if (method, template) not in answered:
            errors.append(f"{method} {template}: no exchange got a described success")
    for c in run.get("required_codes", []):
        if c not in codes_seen:
            errors.append(f"no exchange produced the problem `{c}`")

    print(
        f"openapi: {len(run['exchanges'])} exchanges, {len(answered)} operations answered, "
        f"{len(codes_seen)} problem codes seen: {', '.join(sorted(codes_seen))}"
    )
    for e in errors:
        print(f"VIOLATION {e}")
    print("openapi: OK" if not errors else f"openapi: {len(errors)} violation(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
