#!/usr/bin/env bash
# Debian packages the embedded default mines real data from: translated man pages (long documents per
# language), mandoc (fast renderer; groff is the fallback) and man-db/groff to render them, gettext (msgfmt) for tests that compile .po catalogs.
# Idempotent: installs only what is missing; runs `apt-get update` once, only when something is missing.
# Not root (or no apt-get): prints what to install and exits 0, so `make setup` still works.
set -euo pipefail

WANTED=(mandoc groff-base man-db gettext manpages manpages-dev
  manpages-cs manpages-da manpages-de manpages-el manpages-es manpages-fi manpages-fr manpages-hu
  manpages-id manpages-it manpages-ja manpages-mk manpages-nb manpages-nl manpages-pl manpages-pt-br
  manpages-ro manpages-ru manpages-sr manpages-sv manpages-tr manpages-uk manpages-vi manpages-zh)

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
  echo "system-packages: no apt-get here; install these with your package manager: ${WANTED[*]}" >&2
  exit 0
fi

missing=()
for pkg in "${WANTED[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system-packages: all ${#WANTED[@]} packages already installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-packages: not root; skipping. As root run: apt-get install -y ${missing[*]}" >&2
  exit 0
fi

# Docker images often exclude /usr/share/man from dpkg; the man pages are the point here, so warn.
if grep -rqs 'path-exclude=*/usr/share/man' /etc/dpkg/dpkg.cfg.d/ 2>/dev/null; then
  echo "system-packages: warning: dpkg excludes /usr/share/man (see /etc/dpkg/dpkg.cfg.d/); man pages will be empty" >&2
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Install what the archive has; a package missing on this release is reported, not fatal.
available=()
for pkg in "${missing[@]}"; do
  if apt-cache show "$pkg" >/dev/null 2>&1; then available+=("$pkg"); else echo "system-packages: $pkg not available here; skipped" >&2; fi
done
if [ ${#available[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${available[@]}"
fi
echo "system-packages: installed ${available[*]:-nothing}"
