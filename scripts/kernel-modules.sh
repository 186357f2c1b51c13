# Sourced by scripts/fixtures.sh and scripts/hwvm.sh. Debian's linux-image package has no
# modules.dep: each .ko names its dependencies in its modinfo depends= string.

# copy_modules KERNEL DEST NAME...: copies each NAME's .ko from KERNEL (an extracted
# linux-image package) into DEST, after the modules its depends= string names, recursively,
# and writes their file names in load order to DEST/order.
copy_modules() {
  local kernel=$1 dest=$2
  shift 2
  local -A seen=()
  local order=()
  visit() {
    local name=$1 ko deps dep
    [ -n "${seen[$name]:-}" ] && return
    seen[$name]=1
    ko=$(find "$kernel/lib/modules" -name "$name.ko" -o -name "${name//-/_}.ko" | head -1)
    [ -n "$ko" ] || { echo "module $name is not in the kernel package" >&2; exit 1; }
    deps=$(strings -a "$ko" | sed -n 's/^depends=//p' | head -1)
    for dep in ${deps//,/ }; do visit "$dep"; done
    cp "$ko" "$dest/"
    order+=("$(basename "$ko")")
  }
  mkdir -p "$dest"
  for name; do visit "$name"; done
  printf '%s\n' "${order[@]}" > "$dest/order"
}
