#!/usr/bin/env bash
# Installs a second lavapipe, Mesa 25 from Debian 12's bookworm-backports, into a folder of its
# own, beside the system's Mesa 22.3 (nothing of the system's is replaced). Prints the ICD file
# to select it with:
#
#   scripts/install_mesa25.sh /opt/mesa25          # prints /opt/mesa25/lvp_icd.json
#   VK_DRIVER_FILES=/opt/mesa25/lvp_icd.json LD_LIBRARY_PATH=/opt/mesa25/lib cargo test
#
# (VK_ICD_FILENAMES is set too by .ci/run, for Vulkan loaders older than 1.3.234.)
# The extracted driver needs libdrm from backports as well, hence LD_LIBRARY_PATH.
set -euo pipefail
dest="${1:?usage: scripts/install_mesa25.sh DEST_DIR}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

list=/etc/apt/sources.list.d/bookworm-backports.sources
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        | $SUDO tee "$list" >/dev/null
fi
$SUDO apt-get update -qq

work="$(mktemp -d)"
chmod 755 "$work" # apt downloads as the _apt user
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq -t bookworm-backports mesa-vulkan-drivers libdrm2 libdrm-amdgpu1 >/dev/null)
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
done

arch_dir="$(dirname "$(find "$work/root" -name 'libvulkan_lvp.so' | head -n 1)")"
[ -d "$arch_dir" ] || { echo "install_mesa25.sh: libvulkan_lvp.so not found in the backports packages" >&2; exit 1; }
rm -rf "$dest/lib"
mkdir -p "$dest/lib"
cp -a "$arch_dir"/libvulkan_lvp.so "$arch_dir"/libdrm*.so* "$dest/lib/"
version="$(dpkg-deb -f "$(ls "$work"/mesa-vulkan-drivers_*.deb)" Version)"
api="$(sed -n 's/.*"api_version": *"\([^"]*\)".*/\1/p' "$work"/root/usr/share/vulkan/icd.d/lvp_icd*.json | head -n 1)"
cat >"$dest/lvp_icd.json" <<JSON
{
    "ICD": {
        "api_version": "${api:-1.3.0}",
        "library_path": "$dest/lib/libvulkan_lvp.so"
    },
    "file_format_version": "1.0.0"
}
JSON
echo "$version" >"$dest/VERSION"
echo "$dest/lvp_icd.json"
