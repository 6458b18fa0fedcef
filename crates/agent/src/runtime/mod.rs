//! Running processes under the per-instance shim: spawn, observe, stop, cgroup
//! limits and rotated logs. (Filled in by the runtime work of issue 3.)
