#!/usr/bin/env bash
# Multi-node rlcal training on SLURM: one task per node runs `accelerate launch` for that node's GPUs; the first
# node of the allocation is the main process (rendezvous address), SLURM_NODEID is each node's machine rank.
#
#   sbatch --nodes 2 launch/slurm_multinode.sh recipes/llama3.1-8b/grpo/config_confidence_target_trivia_qa_zero3.yaml
#   ACCELERATE_CONFIG=launch/zero2.yaml sbatch --nodes 4 launch/slurm_multinode.sh RECIPE.yaml --max_steps 500
#
# Environment knobs: ACCELERATE_CONFIG (default launch/zero3.yaml), GPUS_PER_NODE (default: GPUs visible on the
# node), MAIN_PORT (default 29500), WANDB_MODE (offline on clusters without internet; `wandb sync` later).
# Run from the repository root (sbatch keeps the submission directory as the working directory).
#SBATCH --job-name=rlcal-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --exclusive
#SBATCH --output=rlcal-%x-%j.out

set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: sbatch [--nodes N] launch/slurm_multinode.sh RECIPE.yaml [--key value ...]" >&2
  exit 2
fi
RECIPE=$1
shift
if [[ ! -f $RECIPE ]]; then
  echo "recipe not found: $RECIPE (submit from the repository root)" >&2
  exit 2
fi

export ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-launch/zero3.yaml}
export NNODES=${SLURM_NNODES:?run this under sbatch/salloc}
export GPUS_PER_NODE=${GPUS_PER_NODE:-$(nvidia-smi --list-gpus | wc -l)}
export MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MAIN_PORT=${MAIN_PORT:-29500}
export RECIPE
# NCCL picks the fastest interface itself; uncomment to pin one on clusters where it guesses wrong.
# export NCCL_SOCKET_IFNAME=ib0

echo "rlcal: $NNODES nodes x $GPUS_PER_NODE GPUs, main $MAIN_ADDR:$MAIN_PORT," \
  "config $ACCELERATE_CONFIG, recipe $RECIPE"

# Single quotes: SLURM_NODEID must be expanded on each node, not here.
srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c '
  exec accelerate launch \
    --config_file "$ACCELERATE_CONFIG" \
    --num_machines "$NNODES" \
    --num_processes $((NNODES * GPUS_PER_NODE)) \
    --machine_rank "$SLURM_NODEID" \
    --main_process_ip "$MAIN_ADDR" \
    --main_process_port "$MAIN_PORT" \
    -m rlcal.train --config "$RECIPE" "$@"
' rlcal-node "$@"
