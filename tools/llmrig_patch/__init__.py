"""Routine patching's logic (playbooks/patch.yml, role llmrig_patch): which packages changed, which were held,
the benchmark before against after, and the per-host report."""
