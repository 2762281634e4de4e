# Sourced by test.sh: install Debian packages when what they provide is missing (we run as root).
apt_updated=""
install_packages() {  # install_packages PACKAGE...
    if [ -z "$apt_updated" ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
need() {  # need COMMAND PACKAGE...
    command -v "$1" >/dev/null 2>&1 && return 0
    shift
    install_packages "$@"
}
