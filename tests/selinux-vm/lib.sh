# shellcheck shell=bash
# Pieces shared by the VM tests (tests/selinux-vm/run, tests/power-cut/run):
# the kernel, the accelerator, copying host programs into a guest tree (the
# guest scenarios' own helpers are in guest.sh).
# Sourced; the caller defines log and skip (skip prints a loud SKIPPED
# banner and exits 0).

# TCG (software emulation) always works and boots in seconds. KVM is used
# only where it really is KVM: on these machines /dev/kvm is often kvm_pvm
# (paravirtual nested KVM), under which a stock Debian kernel hangs right
# after real mode.
accel() {
    if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && [ -z "${MCSD_VM_TCG:-}" ]; then
        echo "kvm"
    else
        echo "tcg,thread=multi"
    fi
}

# Modules a guest needs to mount an ext4 file system on a virtio disk
# (Debian builds all of them as modules), below lib/modules/<version>/kernel.
VM_MODULES=(
    drivers/virtio/virtio.ko drivers/virtio/virtio_ring.ko
    drivers/virtio/virtio_pci.ko drivers/virtio/virtio_pci_modern_dev.ko
    drivers/virtio/virtio_pci_legacy_dev.ko drivers/block/virtio_blk.ko
    fs/ext4/ext4.ko fs/jbd2/jbd2.ko fs/mbcache.ko lib/crc16.ko
    crypto/crc32c_generic.ko
)

# kernel CACHE_DIR: the kernel package linux-image-amd64 points at,
# unpacked (not installed) under CACHE_DIR; prints the vmlinuz path. Beside
# it, modules/ is a tree with lib/modules/<version>/ holding VM_MODULES and
# their modules.dep (for busybox modprobe).
kernel() {
    local cache=$1 pkg
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [ -n "$pkg" ] || skip "cannot find the kernel package linux-image-amd64 depends on"
    local dir="$cache/kernel-$pkg"
    if [ ! -f "$dir/vmlinuz" ] || [ ! -f "$dir/modules/.done" ]; then
        log "fetching $pkg"
        rm -rf "$dir"
        mkdir -p "$dir/deb" "$dir/modules"
        (cd "$dir/deb" && apt-get download -q "$pkg" >/dev/null 2>&1) ||
            skip "cannot download $pkg"
        local wanted=('./boot/vmlinuz-*') m
        for m in "${VM_MODULES[@]}"; do wanted+=("./lib/modules/*/kernel/$m"); done
        dpkg-deb --fsys-tarfile "$dir"/deb/*.deb | tar -x -C "$dir/deb" --wildcards "${wanted[@]}"
        mv "$dir"/deb/boot/vmlinuz-* "$dir/vmlinuz"
        mv "$dir/deb/lib" "$dir/modules/"
        local version
        version=$(basename "$(echo "$dir"/modules/lib/modules/*)")
        busybox depmod -b "$dir/modules" "$version" || skip "busybox depmod failed for $pkg"
        rm -rf "$dir/deb"
        touch "$dir/modules/.done"
    fi
    echo "$dir/vmlinuz"
}

# Copies a host program and the shared libraries it needs into the tree.
install_program() {
    local tree=$1 program=$2 target=${3:-$2}
    install -D -m 0755 "$program" "$tree$target"
    ldd "$program" 2>/dev/null | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | while read -r lib; do
        [ -e "$tree$lib" ] || install -D -m 0755 "$lib" "$tree$lib"
    done
}
