#!/usr/bin/env bash
# deploy/k8s-evaluate.yaml and deploy/k8s-merge.yaml checked offline, without a cluster (issue #19):
#   1. against the Job API's OpenAPI schema, strict (an unknown or misspelled field fails), of the oldest and the
#      newest Kubernetes that PyPI's kubernetes-validate ships offline (1.25 and 1.37), in a temporary venv
#      (K8S_VENV names one to reuse);
#   2. a copy with a misspelled field and one with a wrong type must FAIL (the validator really checks);
#   3. what the schema cannot say: completions == the N of --shard, an Indexed Job, restartPolicy Never or
#      OnFailure, the merge lists one folder per completion, the pods and the merge mount the same claim;
#   4. each pod's command run by /bin/sh with JOB_COMPLETION_INDEX=0..N-1 and a stub advkit that prints its
#      arguments: the shell expands the index as meant.
# Not run: a cluster (no kubectl apply, no scheduling, no image pull, no volume), the image itself.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'k8s-check: %s\n' "$*"; }
die() { say "FAILED: $*"; exit 1; }
TMP=$(mktemp -d /tmp/advkit-k8s-check.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
VENV=${K8S_VENV:-$TMP/venv}
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q kubernetes-validate==1.37.0
fi
KV=$VENV/bin/kubernetes-validate
FILES=(deploy/k8s-evaluate.yaml deploy/k8s-merge.yaml)

# 1. The schema.
for v in 1.25.0 1.37.0; do
    "$KV" --strict -k "$v" "${FILES[@]}" || die "schema of Kubernetes $v"
done

# 2. The validator fails what it should.
sed 's/^  parallelism:/  paralelism:/' deploy/k8s-evaluate.yaml > "$TMP/misspelled.yaml"
sed 's/^  completions: \(.*\)$/  completions: "\1"/' deploy/k8s-evaluate.yaml > "$TMP/wrongtype.yaml"
for bad in misspelled wrongtype; do
    if "$KV" --strict --quiet "$TMP/$bad.yaml" > "$TMP/$bad.out" 2>&1; then die "the validator passed the $bad copy"; fi
    say "the $bad copy fails as it should: $(grep -m1 -iE 'error|fail' "$TMP/$bad.out" | cut -c1-160)"
done

# 3 and 4. What the schema cannot say, and the pods' command in a shell.
mkdir -p "$TMP/bin"
printf '#!/bin/sh\necho "advkit $*"\n' > "$TMP/bin/advkit"
chmod +x "$TMP/bin/advkit"
PATH=$TMP/bin:$PATH "$VENV/bin/python" - "${FILES[@]}" <<'EOF'
import re, subprocess, sys, yaml
evaluate = yaml.safe_load(open(sys.argv[1]))
merge = yaml.safe_load(open(sys.argv[2]))
spec = evaluate["spec"]
pod = spec["template"]["spec"]
container = pod["containers"][0]
n = spec["completions"]
def check(ok, what):
    if not ok:
        sys.exit(f"k8s-check: FAILED: {what}")
    print(f"k8s-check: ok: {what}")
check(spec.get("completionMode") == "Indexed", "advkit-evaluate is an Indexed Job (JOB_COMPLETION_INDEX is set in each pod)")
check(pod.get("restartPolicy") in ("Never", "OnFailure"), f"restartPolicy {pod.get('restartPolicy')} is allowed for a Job")
check(spec.get("parallelism", 1) <= n, f"parallelism {spec.get('parallelism', 1)} <= completions {n}")
script = " ".join(container["args"])
shards = set(re.findall(r'--shard "\$\{JOB_COMPLETION_INDEX\}/(\d+)"', script))
check(shards == {str(n)}, f"--shard .../N with N = completions = {n}")
for i in range(n):
    out = subprocess.run(container["command"] + container["args"], env={"PATH": __import__("os").environ["PATH"], "JOB_COMPLETION_INDEX": str(i)},
                         capture_output=True, text=True, check=True).stdout.strip()
    check(f"--shard {i}/{n} " in out and out.endswith(f"--out /runs/shard-{i}"), f"pod {i} runs: {out}")
folders = [a for a in merge["spec"]["template"]["spec"]["containers"][0]["command"] if a.startswith("/runs/shard-")]
check(folders == [f"/runs/shard-{i}" for i in range(n)], f"the merge lists the {n} shares' folders")
claims = {v["persistentVolumeClaim"]["claimName"] for d in (evaluate, merge) for v in d["spec"]["template"]["spec"]["volumes"]}
check(len(claims) == 1, f"the pods and the merge mount the same claim ({', '.join(claims)})")
EOF
say "passed (offline: schema and commands; no cluster ran the Jobs)"
