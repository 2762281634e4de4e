# Sourced by test.sh: install a Debian package when its command is missing (we run as root).
apt_updated=""
need() {  # need COMMAND PACKAGE...
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ -z "$apt_updated" ]; then
        apt-get update -qq
        apt_updated=1
    fi
    shift
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
