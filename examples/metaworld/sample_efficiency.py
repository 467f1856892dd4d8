"""The MetaWorld sample-efficiency study (a benchmark, not a test):
`benchmarks.sample_efficiency`.

    MUJOCO_GL=egl python examples/metaworld/sample_efficiency.py --out outputs/sample_efficiency
    python examples/metaworld/sample_efficiency.py --out outputs/sample_efficiency --report-only

Run from the project checkout: the presets are read from configs/.
"""

from benchmarks.sample_efficiency import main

if __name__ == "__main__":
    main()
