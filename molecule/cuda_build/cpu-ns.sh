if [ -r /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then cat /sys/fs/cgroup/cpuacct/cpuacct.usage; else awk '$1 == "usage_usec" {printf "%d\n", $2 * 1000}' /sys/fs/cgroup/cpu.stat; fi
