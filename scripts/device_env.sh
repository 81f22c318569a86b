# Sourced by gpu_check.sh and gpu_tune.sh: the environment a GPU run needs on the device tool's
# machine (see /work/.library/device/README.md), harmless elsewhere. Unpacks the Vulkan loader
# packages carried in .gl, points the loader at NVIDIA's driver where it is installed, and gives
# Mesa's WSI a runtime directory (it wants one even headless).
if [ -d .gl ] && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
