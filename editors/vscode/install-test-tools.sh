#!/bin/sh
# Installs the TextMate grammar test tools (vscode-tmgrammar-test, pinned in package-lock.json) into
# editors/vscode/node_modules, where tests/test_vscode_grammar.py looks for them. Needs node >= 18 and npm.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
