#!/usr/bin/env bash
# Install what skyge needs on a Debian 12 machine, as root: the Debian packages the daemons, the lab
# and the tests call (iproute2, iptables, ping, mount tools, systemd-analyze), and a virtualenv in
# .venv holding skyge itself (editable) with its Python dependencies and test tools. Safe to run
# again: it only installs what is missing.
#
#   deploy/install.sh                  # what the demo, the lab and the tests need
#   deploy/install.sh --system         # also: /opt/skyge (this checkout), the systemd units, folders
#   deploy/install.sh --seed-commands  # also: the seed's command names in /usr/local/sbin
#   deploy/install.sh --java           # also: a JDK and Debian's protobuf/gRPC jars, to compile
#                                      # the Java code of protos/generate.py --lang java (~300 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
system=no
seed_commands=no
java=no
for option in "$@"; do
  case "$option" in
    --system) system=yes ;;
    --seed-commands) seed_commands=yes ;;
    --java) java=yes ;;
    *) echo "deploy/install.sh: unknown option $option (--system, --seed-commands, --java)" >&2
       exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "deploy/install.sh: run as root (the lab creates network namespaces; daemons add IPs)" >&2
  exit 2
fi

python=${PYTHON:-python3}
packages=(iproute2 iptables nftables iputils-ping arping procps psmisc util-linux mount e2fsprogs kmod
          systemd
          # the C++ client (clients/cpp) and its test: Debian's gRPC, protoc and a compiler
          libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev cmake g++ pkg-config
          # Go and Java code from the protos (protos/generate.py --lang go|java): the plugins
          protobuf-compiler protoc-gen-go protoc-gen-go-grpc protobuf-compiler-grpc-java-plugin
          # the lock daemon's etcd backend (lock.cfg backend = "etcd"): the lab's etcd members,
          # its tests and benchmarks
          etcd-server etcd-client)
if [ "$java" = yes ]; then
  # javac and the jars the generated Java code compiles against (tests/unit/test_codegen.py)
  packages+=(default-jdk-headless libprotobuf-java libgrpc-java libguava-java
             libgeronimo-annotation-1.3-spec-java)
fi
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  packages+=(python3 python3-venv)
  python=/usr/bin/python3
elif ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  packages+=(python3-venv)
fi
# Node.js and npm for the Node.js client (clients/node) and its tests, unless present already
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts etcd.service (a one-member cluster on localhost) when it installs the package;
  # the lab runs its own members, so a service we caused is stopped and disabled again. An etcd
  # cluster for the etcd backend is the operator's to configure (docs/ARCHITECTURE.md).
  if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
  fi
fi

# Members of the skyge group may read (status, lists, watches) through the daemons' read-only
# sockets, without root: services/common/access.py.
getent group skyge >/dev/null || groupadd --system skyge

# The venv is rebuilt only when the project's packaging files change.
stamp=.venv/.skyge-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi

# The Node.js client's packages (@grpc/grpc-js from the npm registry), as package-lock.json pins
node_stamp=clients/node/node_modules/.skyge-installed
node_want=$(sha256sum clients/node/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$node_stamp" 2>/dev/null)" != "$node_want" ]; then
  (cd clients/node && npm ci --no-audit --no-fund --loglevel=error)
  echo "$node_want" > "$node_stamp"
fi

if [ "$system" = yes ]; then
  # The units run /opt/skyge/.venv/bin/skyge-*: point /opt/skyge at this checkout (unless a real
  # folder is there already), install the units, make the folders they may write.
  if [ ! -e /opt/skyge ] || [ -L /opt/skyge ]; then
    ln -sfn "$(pwd)" /opt/skyge
  elif [ "$(cd /opt/skyge && pwd -P)" != "$(pwd -P)" ]; then
    echo "deploy/install.sh: /opt/skyge is another folder; the units will run what it holds" >&2
  fi
  install -d -m 0755 /etc/skyge /var/lib/skyge /var/log/skyge
  install -m 0644 deploy/systemd/*.service deploy/systemd/*.target /etc/systemd/system/
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
  fi
  echo "installed the skyge units in /etc/systemd/system (systemctl enable --now skyge.target)"
fi

if [ "$seed_commands" = yes ]; then
  .venv/bin/skyge seed-commands install --dir /usr/local/sbin
fi
