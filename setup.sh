#!/usr/bin/env bash
# One-shot, idempotent set-up for Acai OMR on Debian/Ubuntu: system packages,
# poetry, and the project's virtual environment (.venv). Safe to run again:
# a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the project needs at run time and for its tests.
APT_PACKAGES=(
  python3 python3-venv pipx      # interpreter and a home for poetry
  musescore3                     # engraving: MusicXML -> PNG/PDF/MIDI, data synthesis
  imagemagick                    # flatten MuseScore's transparent PNGs
  fonts-dejavu-core              # a text font for labels on contact sheets / overlays
  chromium                       # headless browser for the end-to-end web tests (Playwright)
  redis-server                   # job queue for scale-out (RQ); its tests start one on loopback
  g++                            # torch.compile builds its CPU kernels with it (acai-omr worker --compile)
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Poetry: use the one on PATH, else install it with pipx.
if ! command -v poetry >/dev/null 2>&1; then
  echo "setup.sh: installing poetry with pipx"
  if [ "$(id -u)" -eq 0 ]; then
    PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin pipx install poetry
  else
    pipx install poetry
    export PATH="$HOME/.local/bin:$PATH"
    echo "setup.sh: poetry is in ~/.local/bin; add it to PATH (pipx ensurepath) for later shells"
  fi
fi

# The project environment (.venv in the repository, see poetry.toml).
# `poetry install` is a no-op when the lock file and the venv already agree.
poetry install --no-interaction
# Compile every module to bytecode now, so the first `acai-omr transcribe` or web request does not spend
# half a minute doing it (a no-op for files already compiled).
.venv/bin/python -m compileall -q -j 0 acai_omr "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
echo "setup.sh: ready"
