#!/usr/bin/env bash
# Installs what run_onnx.mjs needs: Node.js and npm (Debian's nodejs and npm,
# with apt-get, when node is not on PATH) and the locked npm dependencies
# (onnxruntime-node, which ships the ONNX Runtime library) into
# node_modules/ next to this script.
#
# npm runs with --ignore-scripts: onnxruntime-node's install script only
# fetches optional CUDA libraries; the CPU library is in the package.
# Exit code: 0 when `node run_onnx.mjs` can run, non-zero otherwise.
set -euo pipefail
cd "$(dirname "$0")"

install_debian_nodejs() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "error: node is not installed, and installing Debian's nodejs needs root or password-less sudo" >&2
      return 1
    fi
  fi
  local log
  log=$(mktemp)
  if ! { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends nodejs npm; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -f "$log"
    echo "error: apt-get could not install nodejs npm" >&2
    return 1
  fi
  rm -f "$log"
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    install_debian_nodejs
  else
    echo "error: node and npm are not installed (and there is no apt-get to install them): install Node.js 18 or newer" >&2
    exit 1
  fi
fi

npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
node -e 'require("onnxruntime-node")' >/dev/null
echo "node_host: $(node --version), onnxruntime-node $(node -p 'require("onnxruntime-node/package.json").version') installed in $(pwd)/node_modules"
