# Sourced by the scripts that need Debian packages: `install_missing PKG...`
# installs those of the packages that are not installed yet (with sudo when
# not root), and does nothing when all are.
#
# BUILD_PACKAGES: what building remora needs besides Rust: protoc (the
# etcd-client crate generates its gRPC code from etcd's protos in its build
# script).
BUILD_PACKAGES=(protobuf-compiler)

install_missing() {
    local missing=() package sudo=""
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
