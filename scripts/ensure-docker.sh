#!/usr/bin/env bash
# Make sure a Docker engine answers and debootstrap is installed. Idempotent and quiet when
# everything is already there.
#
# Why: CI machines and fresh development machines start with no daemon running (and sometimes
# without the packages). The docker backend needs an engine; `engine image build` needs
# debootstrap to make a base image when no `python:3.X-slim` image is available locally (there
# is no registry to pull from).
#
# Usage: scripts/ensure-docker.sh        (as root, or with passwordless sudo)
# Env:   DOCKER_WAIT_SECONDS  how long to wait for the daemon to answer (default 60)
#        DOCKERD_LOG          where the daemon logs (default /var/log/dockerd.log)
set -euo pipefail

WAIT_SECONDS="${DOCKER_WAIT_SECONDS:-60}"
LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"

say() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    fi
fi

need_root() {
    if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
        die "$1 needs root (run this script as root or give passwordless sudo)"
    fi
}

# --- packages -----------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
# The Swarm tests' image registry (there is no other registry on these machines).
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)

# A docker that already answers (e.g. Docker Desktop, a rootless engine) is good enough: only
# install the engine when nothing answers.
if [ "${#missing[@]}" -gt 0 ] && docker info >/dev/null 2>&1; then
    filtered=()
    for p in "${missing[@]}"; do [ "$p" = docker.io ] || filtered+=("$p"); done
    missing=("${filtered[@]+"${filtered[@]}"}")
fi

if [ "${#missing[@]}" -gt 0 ]; then
    need_root "installing ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${missing[*]} and apt-get is not available: install them by hand"
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null || die "apt-get update failed"
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
fi

# --- daemon -------------------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
    exit 0
fi

command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed and docker.io could not be installed"
need_root "starting dockerd"

if [ -n "$SUDO" ] && $SUDO docker info >/dev/null 2>&1; then
    die "a Docker engine runs but $(id -un) may not use it: add the user to the docker group"
fi

# containerd is started by dockerd itself when no system containerd runs.
say "starting dockerd (log: $LOG)"
# setsid + nohup: the daemon must outlive this script and its terminal/session.
$SUDO sh -c "setsid nohup dockerd >'$LOG' 2>&1 </dev/null &"

deadline=$(( $(date +%s) + WAIT_SECONDS ))
until docker info >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        say "last lines of $LOG:"
        tail -n 20 "$LOG" >&2 2>/dev/null || true
        die "dockerd did not answer within ${WAIT_SECONDS}s"
    fi
    sleep 0.5
done
say "dockerd is up"
