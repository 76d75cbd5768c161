"""Orchestra: train small tool-orchestrating models with multi-objective RL, in JAX."""

from setuptools import find_packages, setup

# Lower bounds are the versions the test suite was run against.
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "ml-collections>=1.1.0",
    "absl-py>=2.5.1",
    "numpy>=2.4",
    "ml-dtypes>=0.5",
    "transformers>=5.24.0",
    "safetensors>=0.8.0",
    "tokenizers>=0.23.3",
    "faiss-cpu>=1.15.1",
    "httpx>=0.28.1",
    "jsonschema>=4.26.0",       # synthesis: LLM replies and generated function schemas
    "aiohttp>=3.14.5",          # the rollout client: a seventh of httpx's cost per request
    "openai>=3.51.0",
    "fastapi>=0.163.2",
    "uvicorn>=0.54.0",
    "uvloop>=0.23.0",           # uvicorn's fast event loop and HTTP parser (launch/serve.py)
    "httptools>=0.9.0",
    "tensorboardX>=2.6.5",
    "tqdm>=4.70.1",
    "matplotlib>=3.11.2",
    # mimalloc, preloaded by the launch scripts on the CPU backend (orchestra/host_memory.py):
    # XLA:CPU's per-call buffers stay mapped between calls. Wheels for these two only.
    "cmeel-mimalloc>=3.4.3; sys_platform == 'linux' and "
    "(platform_machine == 'x86_64' or platform_machine == 'aarch64')",
]

EXTRAS_REQUIRE = {
    # CUDA 12 JAX and FAISS on GPU hosts (install instead of the CPU builds).
    "gpu": ["jax[cuda12]>=0.10.2", "faiss-gpu-cu12>=1.14.1"],
    # External rollout server (GPU only).
    "vllm": ["vllm>=0.16.0"],
    # Web search tool.
    "search": ["tavily-python>=0.8.5"],
    # Tests; torch is only the CPU reference for parity checks.
    "test": ["pytest>=9.2.0", "pytest-xdist>=3.8.0", "torch==2.13.0"],
}

setup(
    name="orchestra",
    version="0.1.0",
    description="ToolOrchestra-style orchestrator training with multi-objective RL in JAX",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["orchestra", "orchestra.*"]),
    package_data={"orchestra.synth": ["prompts/*.md"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
