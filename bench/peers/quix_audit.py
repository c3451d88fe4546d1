"""The stream-processing peer of `audit-stream bench`: a quixstreams application in the
same role as audit-stream, on the same input topics and records.

- validation records: the Theus rule check of the recipes (min, max, eq, neq, min_len,
  max_len, regex), a per-key failure counter in quixstreams' state store (RocksDB), and a
  STOP / ABORT / BLOCK / WARN decision emitted to the decisions topic;
- execution records: decoded, and a verdict of the scope check (A-001) emitted;
- coordination records: decoded, nothing emitted (audit-stream only stores them);
- anything that is not a JSON object: a dead letter emitted.

It does less than audit-stream (no JSON Schema validation, one contract check of seven, no
store), which only favours the peer in the comparison.

Started by `audit-stream bench` with the venv of bench/peers/setup.sh. When it has
processed --records input records it stops and prints one JSON line: records, and the
monotonic time and CPU time (user + system, this process) at the first record and at the
end, from which the bench takes records/s and CPU per record.
"""

import argparse
import json
import logging
import re
import resource
import sys
import time

from quixstreams import Application


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def violation(rule, value):
    """The message of the failing check of `rule` on `value`, as Theus does it."""
    message = None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number:
        if "min" in rule and value < rule["min"]:
            message = f"{rule['field']} must be >= {rule['min']}"
        elif "max" in rule and value > rule["max"]:
            message = f"{rule['field']} must be <= {rule['max']}"
        elif "eq" in rule and value != rule["eq"]:
            message = f"{rule['field']} must be == {rule['eq']}"
        elif "neq" in rule and value == rule["neq"]:
            message = f"{rule['field']} must be != {rule['neq']}"
    if isinstance(value, (str, list, dict)):
        if "min_len" in rule and len(value) < rule["min_len"]:
            message = f"{rule['field']} length must be >= {rule['min_len']}"
        elif "max_len" in rule and len(value) > rule["max_len"]:
            message = f"{rule['field']} length must be <= {rule['max_len']}"
    if isinstance(value, str) and "regex" in rule:
        if rule["_re"].match(value) is None:
            message = f"{rule['field']} must match {rule['regex']}"
    if message is not None and rule.get("message"):
        message = rule["message"]
    return message


def resolve(values, path):
    value = values
    for segment in path.split("."):
        if not isinstance(value, dict) or segment not in value:
            return None
        value = value[segment]
    return value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--validation", required=True)
    parser.add_argument("--execution", required=True)
    parser.add_argument("--coordination", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--recipes", required=True, help="the recipes as JSON")
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()

    with open(args.recipes) as f:
        recipes = json.load(f)
    defaults = {"level": "B", "threshold_max": 3, "threshold_min": 0, "reset_on_success": True}
    defaults.update(recipes.get("audit") or {})
    for recipe in recipes["process_recipes"].values():
        for phase in ("inputs", "outputs"):
            for rule in recipe.get(phase) or []:
                if "regex" in rule:
                    rule["_re"] = re.compile(rule["regex"])
                if "threshold_max" in rule:
                    rule.setdefault("max_threshold", rule["threshold_max"])

    progress = {"records": 0, "first": None}

    def processed(_topic, _partition, _offset):
        if progress["first"] is None:
            progress["first"] = (time.monotonic(), cpu_seconds())
        progress["records"] += 1
        if progress["records"] >= args.records:
            app.stop()

    app = Application(
        broker_address=args.brokers,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
        # The topics are created up front by the bench (Tansu needs explicit retention).
        auto_create_topics=False,
        on_message_processed=processed,
        # As for audit-stream and the null consumer: Tansu answers a fetch only after
        # fetch.wait.max.ms, even with records there.
        consumer_extra_config={"fetch.wait.max.ms": 10},
    )
    topics = {
        kind: app.topic(name, value_deserializer="bytes", key_deserializer="str")
        for kind, name in (
            ("validation", args.validation),
            ("execution", args.execution),
            ("coordination", args.coordination),
        )
    }
    output = app.topic(args.output, value_serializer="json", key_serializer="str")


    def parse(raw):
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            return None, str(error)
        if not isinstance(event, dict):
            return None, "not a JSON object"
        return event, None

    def dead_letter(raw, error):
        return {"error_class": "not_json", "error": error, "payload_size": len(raw or b"")}

    def audit_validation(raw, state):
        event, error = parse(raw)
        if event is None:
            return [dead_letter(raw, error)]
        try:
            tenant, process, phase = event["tenant_id"], event["process"], event["phase"]
            values = event["values"]
        except (KeyError, TypeError) as missing:
            return [dead_letter(raw, f"missing {missing}")]
        recipe = recipes["process_recipes"].get(process)
        rules = (recipe or {}).get("inputs" if phase == "input" else "outputs")
        if not rules or not isinstance(values, dict):
            return []
        decisions = []
        for rule in rules:
            field = rule["field"]
            value = values.get(field) if phase == "input" else resolve(values, field)
            if value is None:
                continue
            key = f"{tenant}:{process}:{phase}:{field}"
            message = violation(rule, value)
            if message is None:
                if defaults["reset_on_success"]:
                    state.delete(key)
                continue
            count = state.get(key, 0) + 1
            state.set(key, count)
            level = rule.get("level", defaults["level"])
            threshold = rule.get("max_threshold", defaults["threshold_max"])
            decision = None
            if level == "S":
                decision = "STOP"
            elif level == "A":
                decision = "ABORT"
            elif level == "B" and count > threshold:
                decision = "BLOCK"
            elif level == "B" and 0 < defaults["threshold_min"] <= count:
                decision = "WARN"
            if decision:
                decisions.append(
                    {
                        "event_id": event.get("event_id"),
                        "tenant_id": tenant,
                        "key": key,
                        "level": level,
                        "decision": decision,
                        "count": count,
                        "threshold": threshold,
                        "message": message,
                        "occurred_at": event.get("occurred_at"),
                    }
                )
        return decisions

    def audit_execution(raw):
        event, error = parse(raw)
        if event is None:
            return [dead_letter(raw, error)]
        try:
            scope = set(event["contract_scope"])
            targets = {
                s["output"]["target"]
                for s in event["step_results"]
                if isinstance(s.get("output"), dict) and "target" in s["output"]
            }
        except (KeyError, TypeError) as missing:
            return [dead_letter(raw, f"missing {missing}")]
        outside = sorted(targets - scope)
        return [
            {
                "job_id": event.get("job_id"),
                "contract_id": event.get("contract_id"),
                "verdict": "FAIL" if outside else "PASS",
                "checks": [{"check_id": "A-001", "outside_scope": outside}],
            }
        ]

    def audit_coordination(raw):
        event, error = parse(raw)
        return [dead_letter(raw, error)] if event is None else []

    app.dataframe(topics["validation"]).apply(audit_validation, stateful=True, expand=True).to_topic(output)
    app.dataframe(topics["execution"]).apply(audit_execution, expand=True).to_topic(output)
    app.dataframe(topics["coordination"]).apply(audit_coordination, expand=True).to_topic(output)

    app.run()
    end = (time.monotonic(), cpu_seconds())
    first = progress["first"] or end
    print(
        json.dumps(
            {
                "records": progress["records"],
                "first_record_secs": first[0],
                "end_secs": end[0],
                "cpu_at_first_record_secs": first[1],
                "cpu_at_end_secs": end[1],
            }
        ),
        flush=True,
    )
    return 0 if progress["records"] >= args.records else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
