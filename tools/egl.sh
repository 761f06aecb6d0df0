#!/usr/bin/env bash
# Sourced by tools/test.sh and tools/screenshots.sh: make sure Mesa's EGL/GL libraries are there, which VTK
# (slicer-core) needs to render Slicer's slice views offscreen without an X server. Installs them with apt-get
# when running as root on Debian/Ubuntu; otherwise says what to install (the slice-view tests then skip).
s2dc_have_egl() {
  { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libEGL\.so\.1' \
    || ls /usr/lib/*/libEGL.so.1 /usr/lib64/libEGL.so.1 >/dev/null 2>&1
}
if ! s2dc_have_egl; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Mesa's EGL/GL libraries (libegl1 libgl1 libgles2) for offscreen rendering" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 libgles2 >/dev/null; } \
      || echo "tools/egl.sh: could not install libegl1 libgl1 libgles2" >&2
  else
    echo "tools/egl.sh: offscreen rendering needs Mesa's EGL (Debian/Ubuntu: apt-get install libegl1 libgl1 libgles2)" >&2
  fi
fi
