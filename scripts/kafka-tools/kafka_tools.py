"""Stand-ins for the Apache Kafka command-line tools that librdkafka's test suite runs through
$KAFKA_PATH/bin (kafka-topics.sh, kafka-configs.sh, kafka-acls.sh).

They accept the subset of Kafka's arguments that the suite and people commonly pass and do the
work through the Admin API (confluent-kafka's AdminClient; kafka-acls.sh through `riptide acl`),
so they need nothing but a broker.

    python kafka_tools.py topics  --bootstrap-server H:P --create --topic T --partitions 4 ...
    python kafka_tools.py configs --bootstrap-server H:P --entity-type topics --entity-name T \
                                  --alter --add-config k=v,k2=v2
    python kafka_tools.py acls    --bootstrap-server H:P --add --deny-principal 'User:*' \
                                  --operation All --topic T   (runs `riptide acl`)

Exit status: 0 on success, 1 on an error reported by the broker, 2 on bad usage.
"""

import argparse
import sys

TIMEOUT_S = 30.0


def die(msg, code=1):
    print(f"Error: {msg}", file=sys.stderr)
    sys.exit(code)


def admin(bootstrap):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(TIMEOUT_S * 1000)})


def wait(futures):
    """Wait for every future of an AdminClient call; return {key: exception or None}."""
    out = {}
    for key, fut in futures.items():
        try:
            fut.result(timeout=TIMEOUT_S)
            out[key] = None
        except Exception as e:  # KafkaException carries the broker's error
            out[key] = e
    return out


def error_code_name(exc):
    try:
        return exc.args[0].name()
    except Exception:
        return ""


def parse_kv(items):
    """--config k=v (repeatable) -> dict."""
    conf = {}
    for item in items or []:
        if "=" not in item:
            die(f"config must be KEY=VALUE, not {item!r}", 2)
        k, v = item.split("=", 1)
        conf[k] = v
    return conf


def split_config_list(s):
    """kafka-configs.sh's --add-config: k=v,k2=[a,b] (brackets protect commas)."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    conf = {}
    for item in out:
        if "=" not in item:
            die(f"config must be KEY=VALUE, not {item!r}", 2)
        k, v = item.split("=", 1)
        if v.startswith("[") and v.endswith("]"):
            v = v[1:-1]
        conf[k.strip()] = v
    return conf


# ---- kafka-topics.sh -------------------------------------------------------------------------

def topics(argv):
    ap = argparse.ArgumentParser(prog="kafka-topics.sh")
    ap.add_argument("--bootstrap-server")
    ap.add_argument("--zookeeper")
    act = ap.add_mutually_exclusive_group(required=True)
    for a in ("create", "delete", "alter", "list", "describe"):
        act.add_argument(f"--{a}", action="store_true")
    ap.add_argument("--topic")
    ap.add_argument("--partitions", type=int)
    ap.add_argument("--replication-factor", type=int)
    ap.add_argument("--config", action="append")
    ap.add_argument("--if-not-exists", action="store_true")
    ap.add_argument("--if-exists", action="store_true")
    a = ap.parse_args(argv)

    if a.zookeeper and not a.bootstrap_server:
        die("--zookeeper is not supported (there is no ZooKeeper): use --bootstrap-server", 2)
    if not a.bootstrap_server:
        die("--bootstrap-server is required", 2)
    if (a.create or a.delete or a.alter) and not a.topic:
        die("--topic is required", 2)

    from confluent_kafka.admin import NewPartitions, NewTopic

    ac = admin(a.bootstrap_server)

    if a.create:
        nt = NewTopic(a.topic, num_partitions=a.partitions or 1,
                      replication_factor=a.replication_factor or 1, config=parse_kv(a.config))
        err = wait(ac.create_topics([nt], request_timeout=TIMEOUT_S))[a.topic]
        if err and not (a.if_not_exists and error_code_name(err) == "TOPIC_ALREADY_EXISTS"):
            die(f"creating topic {a.topic}: {err}")
        print(f"Created topic {a.topic}.")
    elif a.delete:
        err = wait(ac.delete_topics([a.topic], request_timeout=TIMEOUT_S))[a.topic]
        if err and not (a.if_exists and error_code_name(err) == "UNKNOWN_TOPIC_OR_PART"):
            die(f"deleting topic {a.topic}: {err}")
    elif a.alter:
        if a.partitions is None:
            die("--alter supports --partitions only (use kafka-configs.sh for configs)", 2)
        err = wait(ac.create_partitions([NewPartitions(a.topic, a.partitions)],
                                        request_timeout=TIMEOUT_S))[a.topic]
        if err:
            die(f"adding partitions to {a.topic}: {err}")
    else:
        md = ac.list_topics(timeout=TIMEOUT_S)
        names = sorted(t for t in md.topics if not a.topic or t == a.topic)
        if a.topic and not names:
            die(f"topic {a.topic} does not exist")
        for name in names:
            if a.list:
                print(name)
                continue
            t = md.topics[name]
            print(f"Topic: {name}\tPartitionCount: {len(t.partitions)}\t"
                  f"ReplicationFactor: {len(next(iter(t.partitions.values())).replicas) if t.partitions else 0}")
            for pid in sorted(t.partitions):
                p = t.partitions[pid]
                print(f"\tTopic: {name}\tPartition: {pid}\tLeader: {p.leader}\t"
                      f"Replicas: {','.join(map(str, p.replicas))}\tIsr: {','.join(map(str, p.isrs))}")


# ---- kafka-configs.sh ------------------------------------------------------------------------

def configs(argv):
    ap = argparse.ArgumentParser(prog="kafka-configs.sh")
    ap.add_argument("--bootstrap-server", required=True)
    ap.add_argument("--entity-type", choices=["topics", "brokers"])
    ap.add_argument("--entity-name")
    ap.add_argument("--entity-default", action="store_true")
    ap.add_argument("--topic")
    ap.add_argument("--broker")
    act = ap.add_mutually_exclusive_group(required=True)
    act.add_argument("--alter", action="store_true")
    act.add_argument("--describe", action="store_true")
    ap.add_argument("--add-config", action="append")
    ap.add_argument("--delete-config", action="append")
    a = ap.parse_args(argv)

    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    if a.topic:
        rtype, name = "topic", a.topic
    elif a.broker is not None:
        rtype, name = "broker", a.broker
    elif a.entity_type and (a.entity_name is not None or a.entity_default):
        rtype = "topic" if a.entity_type == "topics" else "broker"
        name = a.entity_name if a.entity_name is not None else ""
    else:
        die("give --topic, --broker or --entity-type with --entity-name", 2)

    ac = admin(a.bootstrap_server)
    res = ConfigResource(rtype, name)

    if a.alter:
        entries = []
        for item in a.add_config or []:
            for k, v in split_config_list(item).items():
                entries.append(ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET))
        for item in a.delete_config or []:
            for k in filter(None, (s.strip() for s in item.split(","))):
                entries.append(ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE))
        if not entries:
            die("--alter needs --add-config or --delete-config", 2)
        res = ConfigResource(rtype, name, incremental_configs=entries)
        for r, err in wait(ac.incremental_alter_configs([res])).items():
            if err:
                die(f"altering configs of {rtype} {name}: {err}")
        print(f"Completed updating config for {rtype} {name}.")
    else:
        for r, fut in ac.describe_configs([res], request_timeout=TIMEOUT_S).items():
            try:
                entries = fut.result(timeout=TIMEOUT_S)
            except Exception as e:
                die(f"describing configs of {rtype} {name}: {e}")
            print(f"Dynamic configs for {rtype} {name} are:")
            for k in sorted(entries):
                e = entries[k]
                if not e.is_default:
                    print(f"  {k}={e.value if not e.is_sensitive else '(sensitive)'}")


# ---- kafka-acls.sh ---------------------------------------------------------------------------

# Kafka's operation names (AclOperation, any case, with or without separators) -> riptide's.
ACL_OPERATIONS = {
    "all": "all", "read": "read", "write": "write", "create": "create", "delete": "delete",
    "alter": "alter", "describe": "describe", "clusteraction": "cluster-action",
    "describeconfigs": "describe-configs", "alterconfigs": "alter-configs",
    "idempotentwrite": "idempotent-write",
}

# --command-config properties (librdkafka's and Java's names) -> `riptide acl` environment.
ACL_CLIENT_ENV = {
    "security.protocol": "RIPTIDE_SECURITY_PROTOCOL",
    "sasl.mechanism": "RIPTIDE_SASL_MECHANISM",
    "sasl.mechanisms": "RIPTIDE_SASL_MECHANISM",
    "sasl.username": "RIPTIDE_SASL_USERNAME",
    "sasl.password": "RIPTIDE_SASL_PASSWORD",
    "ssl.ca.location": "RIPTIDE_SSL_CA_LOCATION",
    "ssl.certificate.location": "RIPTIDE_SSL_CERTIFICATE_LOCATION",
    "ssl.key.location": "RIPTIDE_SSL_KEY_LOCATION",
}


def riptide_bin():
    """RIPTIDE_BIN, else this repository's release build, else `riptide` on PATH."""
    import os
    import shutil

    b = os.environ.get("RIPTIDE_BIN")
    if b:
        return b
    here = os.path.dirname(os.path.abspath(__file__))
    b = os.path.join(here, "..", "..", "target", "release", "riptide")
    if os.access(b, os.X_OK):
        return b
    b = shutil.which("riptide")
    if not b:
        die("no riptide binary: set RIPTIDE_BIN", 2)
    return b


def acls(argv):
    """kafka-acls.sh --bootstrap-server H:P --add|--remove|--list ... -> `riptide acl add|remove|list`.

    Principals, operations (default All for --add), hosts (--allow-host for the allow principals,
    --deny-host for the deny ones, default *), one resource (--topic, --group,
    --transactional-id or --cluster) and --resource-pattern-type. --command-config reads the
    client's security.protocol, sasl.* and ssl.*.location; --force is accepted (nothing asks).
    """
    import os
    import subprocess

    ap = argparse.ArgumentParser(prog="kafka-acls.sh")
    ap.add_argument("--bootstrap-server")
    ap.add_argument("--authorizer-properties", action="append")
    ap.add_argument("--authorizer")
    ap.add_argument("--command-config")
    act = ap.add_mutually_exclusive_group(required=True)
    for a in ("add", "remove", "list"):
        act.add_argument(f"--{a}", action="store_true")
    ap.add_argument("--allow-principal", action="append", default=[])
    ap.add_argument("--deny-principal", action="append", default=[])
    ap.add_argument("--allow-host", action="append", default=[])
    ap.add_argument("--deny-host", action="append", default=[])
    ap.add_argument("--operation", action="append", default=[])
    ap.add_argument("--topic")
    ap.add_argument("--group")
    ap.add_argument("--transactional-id")
    ap.add_argument("--cluster", action="store_true")
    ap.add_argument("--resource-pattern-type")
    ap.add_argument("--principal")  # --list's filter
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)

    if not a.bootstrap_server:
        die("--bootstrap-server is required (there is no ZooKeeper: --authorizer-properties "
            "zookeeper.connect=... cannot be used)", 2)

    env = dict(os.environ)
    if a.command_config:
        try:
            lines = open(a.command_config).read().splitlines()
        except OSError as e:
            die(f"--command-config: {e}", 2)
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = (x.strip() for x in line.split("=", 1))
            if k in ACL_CLIENT_ENV:
                env[ACL_CLIENT_ENV[k]] = v

    ops = []
    for op in a.operation:
        key = op.replace("-", "").replace("_", "").lower()
        if key not in ACL_OPERATIONS:
            die(f"unknown --operation {op!r}", 2)
        ops.append(ACL_OPERATIONS[key])
    if a.add and not ops:
        ops = ["all"]

    resource = []
    if a.topic is not None:
        resource += ["--topic", a.topic]
    if a.group is not None:
        resource += ["--group", a.group]
    if a.transactional_id is not None:
        resource += ["--transactional-id", a.transactional_id]
    if a.cluster:
        resource += ["--cluster"]
    if len([x for x in (a.topic, a.group, a.transactional_id) if x is not None]) + a.cluster > 1:
        die("give one resource: --topic, --group, --transactional-id or --cluster", 2)
    if (a.add or a.remove) and not resource:
        die("--add and --remove need a resource: --topic, --group, --transactional-id or --cluster", 2)
    if a.resource_pattern_type:
        resource += ["--resource-pattern-type", a.resource_pattern_type.lower()]

    base = [riptide_bin(), "acl", "-b", a.bootstrap_server]
    for o in ops:
        resource += ["--operation", o]

    def hosts(given):
        if len(set(given)) > 1:
            die("give at most one host per permission (--allow-host, --deny-host)", 2)
        return given[0] if given else None

    calls = []
    if a.list:
        cmd = base + ["list"] + resource
        if a.principal:
            cmd += ["--allow-principal", a.principal]
        calls.append(cmd)
    else:
        verb = "add" if a.add else "remove"
        if not a.allow_principal and not a.deny_principal:
            if a.add:
                die("--add needs --allow-principal or --deny-principal", 2)
            calls.append(base + [verb] + resource)  # every binding of the resource
        for flag, principals, host in (("--allow-principal", a.allow_principal, hosts(a.allow_host)),
                                       ("--deny-principal", a.deny_principal, hosts(a.deny_host))):
            if not principals:
                continue
            cmd = base + [verb] + resource
            for p in principals:
                cmd += [flag, p]
            if host is not None:
                cmd += ["--host", host]
            elif a.add:
                cmd += ["--host", "*"]
            calls.append(cmd)

    for cmd in calls:
        r = subprocess.run(cmd, env=env)
        if r.returncode != 0:
            die(f"{' '.join(cmd[1:])} failed (exit {r.returncode})", 1)


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("topics", "configs", "acls"):
        die("usage: kafka_tools.py topics|configs|acls ARGS...", 2)
    {"topics": topics, "configs": configs, "acls": acls}[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
