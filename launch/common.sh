# Shared by launch/local.sh, gpu.sh and tpu_pod.sh (sourced): shell quoting, dry-run handling.
# slurm_gpu.sbatch keeps its own copy, since sbatch runs a copy of the script from elsewhere.

# Quotes one word for a POSIX shell exactly like Python's shlex.quote.
quote() {
  local LC_ALL=C s=$1 sq="'" escaped="'\"'\"'"
  if [[ -n $s && $s =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//"$sq"/"$escaped"}"
  fi
}

# The words, each quoted, joined by spaces: one shell command line.
join_quoted() {
  local word words=()
  for word in "$@"; do words+=("$(quote "$word")"); done
  local IFS=' '
  printf '%s' "${words[*]}"
}

# Runs a command, or prints it (each word quoted) in dry-run mode.
run() {
  if [[ $dry_run == 1 ]]; then
    printf '%s\n' "$(join_quoted "$@")"
  else
    exec "$@"
  fi
}

# dry_run=1 with DRY_RUN=1|true|yes in the environment; a leading --dry_run is handled by the
# caller (`[[ ${1:-} == --dry_run ]] && { dry_run=1; shift; }`), since `shift` acts locally.
dry_run=0
if [[ ${DRY_RUN:-0} =~ ^(1|true|yes)$ ]]; then dry_run=1; fi
