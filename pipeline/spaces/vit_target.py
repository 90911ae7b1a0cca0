"""ViT target network (weights from the hypernetwork, sliced AutoFormer-style) and the benchmark network,
both on timm's own blocks (`timm.models.vision_transformer.Block` / `Attention` / `Mlp`, `PatchEmbed`).

Weight entanglement (AutoFormer): every tensor of an architecture is the leading corner of the supernet's
maximal tensor: layer i of any architecture reads row i of the shared per-layer tensors, cut to its
widths; the generated matrices are corners of their node's maximal matrices (pipeline/models/chunked.py).

What is generated and what is shared (decision):
- generated (ParamSlot, from the node that owns it): the four matrices of every layer: q, k, v
  (Q x E each, from the layer's Q-K-V node; three kinds, so they differ), proj (E x Q, attention node),
  fc1 (H x E) and fc2 (E x H) (MLP node);
- shared (`shared.`, ordinary parameters at the supernet's maximal sizes, sliced): patch embedding, cls
  token, position embedding, final LayerNorm and head, and per layer index its LayerNorm affines and
  biases. Vectors are not generated: the hypernetwork's Kaiming gain sqrt(2 / fan_in) is meaningless
  for them, and a LayerNorm gain must start at 1.

The timm modules are stateless templates: `ViTTargetNet` keeps them outside its own parameter list and
runs each one with `torch.func.functional_call` on tensors assembled from its generated and shared
parameters (nested inside the model's own functional_call), so the target's parameters are exactly its
slots plus `shared.*` (the contract) while the arithmetic is timm's Block.forward.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, resample_abs_pos_embed
from timm.models.vision_transformer import Attention, Block
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from pipeline.spaces.base import ParamSlot, TargetNet
from pipeline.spaces.vit_arch import Layer, Supernet, ViTArch

# node indices in a layer's cell graph (see vit.py): input 0, Q-K-V 1, attention 2, MLP 3, output 4
QKV_NODE, ATTN_NODE, MLP_NODE = 1, 2, 3


def timm_block(embed_dim: int, layer: Layer) -> Block:
    """timm's pre-norm Block for one layer. timm's Block sizes attention by `dim // num_heads`; AutoFormer's
    Q-K-V dim differs from the embed dim, so the attention is replaced by timm's Attention with
    `attn_head_dim = qkv_dim / heads` (qkv: E -> 3Q, proj: Q -> E)."""
    block = Block(embed_dim, num_heads=1, mlp_ratio=layer.mlp_ratio, qkv_bias=True)
    block.attn = Attention(embed_dim, num_heads=layer.num_heads, attn_head_dim=layer.qkv_dim // layer.num_heads,
                           qkv_bias=True)
    return block


def _check_grid(x: torch.Tensor, image_size: int, patch_size: int, what: str) -> None:
    if tuple(x.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"the ViT {what} is built for {image_size}x{image_size} images (patch {patch_size}) "
                         f"and got {tuple(x.shape[-2:])}: set space.settings.target_image_size to the aux image "
                         f"size (model.hyper.image_size)")


class ViTShared(nn.Module):
    """The target parameters no node owns, at the supernet's maximal widths and depth (sliced per architecture)."""

    def __init__(self, net: Supernet, image_size: int, patch_size: int, num_classes: int):
        super().__init__()
        E, Q, H, D = net.embed_dim[1], net.qkv_dim[1], net.max_hidden, net.depth[1]
        tokens = (image_size // patch_size) ** 2 + 1
        self.patch_weight = nn.Parameter(torch.empty(E, 3, patch_size, patch_size))
        self.patch_bias = nn.Parameter(torch.zeros(E))
        self.cls_token = nn.Parameter(torch.empty(1, 1, E))
        self.pos_embed = nn.Parameter(torch.empty(1, tokens, E))
        self.norm1_weight = nn.Parameter(torch.ones(D, E))
        self.norm1_bias = nn.Parameter(torch.zeros(D, E))
        self.qkv_bias = nn.Parameter(torch.zeros(D, 3, Q))
        self.proj_bias = nn.Parameter(torch.zeros(D, E))
        self.norm2_weight = nn.Parameter(torch.ones(D, E))
        self.norm2_bias = nn.Parameter(torch.zeros(D, E))
        self.fc1_bias = nn.Parameter(torch.zeros(D, H))
        self.fc2_bias = nn.Parameter(torch.zeros(D, E))
        self.norm_weight = nn.Parameter(torch.ones(E))
        self.norm_bias = nn.Parameter(torch.zeros(E))
        self.head_weight = nn.Parameter(torch.empty(num_classes, E))
        self.head_bias = nn.Parameter(torch.zeros(num_classes))
        if self.patch_weight.device.type != "meta":
            # timm's ViT init: conv default for the patch embedding, trunc-normal 0.02 elsewhere
            nn.init.kaiming_uniform_(self.patch_weight, a=5 ** 0.5)
            for p in (self.cls_token, self.pos_embed, self.head_weight):
                nn.init.trunc_normal_(p, std=0.02)


class _LayerSlots(nn.Module):
    """The generated matrices of one layer (meta placeholders; functional_call supplies them)."""

    def __init__(self, E: int, layer: Layer):
        super().__init__()
        Q, H = layer.qkv_dim, layer.hidden(E)
        for name, shape in (("q", (Q, E)), ("k", (Q, E)), ("v", (Q, E)), ("proj", (E, Q)), ("fc1", (H, E)),
                            ("fc2", (E, H))):
            self.register_parameter(name, nn.Parameter(torch.empty(shape)))


# parameter kind of each generated matrix and the node of a layer graph that owns it
SLOT_KINDS = {"q": ("vit_q", QKV_NODE), "k": ("vit_k", QKV_NODE), "v": ("vit_v", QKV_NODE),
              "proj": ("vit_proj", ATTN_NODE), "fc1": ("vit_fc1", MLP_NODE), "fc2": ("vit_fc2", MLP_NODE)}


def _run_block(block: Block, names: tuple[str, ...], x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
    return functional_call(block, dict(zip(names, tensors)), (x,), strict=True)


class ViTTargetNet(TargetNet):
    """One architecture's ViT: patch embedding, cls token + position embedding, `depth` timm Blocks, final
    LayerNorm, head on the cls token. Layer i's weights come from encoded graph `first_layer_graph + i`."""

    def __init__(self, arch: ViTArch, net: Supernet, image_size: int, patch_size: int, num_classes: int,
                 first_layer_graph: int = 1, checkpoint_blocks: bool = False, device: Any = None):
        super().__init__()
        self.arch, self.image_size, self.patch_size = arch, image_size, patch_size
        self.checkpoint_blocks = checkpoint_blocks
        E = arch.embed_dim
        with torch.device(device or "cpu"):
            self.shared = ViTShared(net, image_size, patch_size, num_classes)
            self.layers = nn.ModuleList(_LayerSlots(E, layer) for layer in arch.layers)
        # templates only, held in a plain dict so that they are not submodules: all their tensors come
        # from forward's functional_call
        with torch.device("meta"):
            self._timm = {"patch": PatchEmbed(image_size, patch_size, 3, E),
                          "blocks": [timm_block(E, layer) for layer in arch.layers]}
        self.param_slots: list[ParamSlot] = [
            ParamSlot(f"layers.{i}.{name}", first_layer_graph + i, node, kind,
                      tuple(getattr(self.layers[i], name).shape))
            for i in range(arch.depth) for name, (kind, node) in SLOT_KINDS.items()]

    def block_params(self, i: int) -> dict[str, torch.Tensor]:
        """timm Block parameters of layer i: generated matrices + row i of the shared tensors, cut to size."""
        sh, slots, layer = self.shared, self.layers[i], self.arch.layers[i]
        E, Q, H = self.arch.embed_dim, layer.qkv_dim, layer.hidden(self.arch.embed_dim)
        return {"norm1.weight": sh.norm1_weight[i, :E], "norm1.bias": sh.norm1_bias[i, :E],
                "attn.qkv.weight": torch.cat([slots.q, slots.k, slots.v]),
                "attn.qkv.bias": sh.qkv_bias[i, :, :Q].reshape(3 * Q),
                "attn.proj.weight": slots.proj, "attn.proj.bias": sh.proj_bias[i, :E],
                "norm2.weight": sh.norm2_weight[i, :E], "norm2.bias": sh.norm2_bias[i, :E],
                "mlp.fc1.weight": slots.fc1, "mlp.fc1.bias": sh.fc1_bias[i, :H],
                "mlp.fc2.weight": slots.fc2, "mlp.fc2.bias": sh.fc2_bias[i, :E]}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_grid(images, self.image_size, self.patch_size, "target network")
        sh, E = self.shared, self.arch.embed_dim
        x = functional_call(self._timm["patch"], {"proj.weight": sh.patch_weight[:E], "proj.bias": sh.patch_bias[:E]},
                            (images,), strict=True)
        x = torch.cat([sh.cls_token[..., :E].expand(x.shape[0], -1, -1), x], 1) + sh.pos_embed[..., :E]
        for i, block in enumerate(self._timm["blocks"]):
            params = self.block_params(i)
            if self.checkpoint_blocks and torch.is_grad_enabled():
                # the tensors go in as arguments: the recomputation runs in backward, after the model's
                # functional_call has put the meta placeholders back
                x = checkpoint(_run_block, block, tuple(params), x, *params.values(), use_reentrant=False)
            else:
                x = _run_block(block, tuple(params), x, *params.values())
        x = F.layer_norm(x, (E,), sh.norm_weight[:E], sh.norm_bias[:E])
        return F.linear(x[:, 0], sh.head_weight[:, :E], sh.head_bias)


class ViTBenchmarkNet(nn.Module):
    """The architecture's own ViT with ordinary, randomly initialised parameters (timm's init), built at
    `image_size` / `patch_size`; other input sizes (a multiple of the patch) resample the position
    embedding as timm does, so zero-cost proxies can run it on CIFAR-sized images."""

    def __init__(self, arch: ViTArch, num_classes: int, image_size: int = 224, patch_size: int = 16):
        super().__init__()
        E = arch.embed_dim
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(image_size, patch_size, 3, E, strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, E))
        self.blocks = nn.Sequential(*(timm_block(E, layer) for layer in arch.layers))
        self.norm = nn.LayerNorm(E)
        self.head = nn.Linear(E, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        pos = self.pos_embed
        if pos.shape[1] != grid[0] * grid[1] + 1:
            pos = resample_abs_pos_embed(pos, new_size=grid, num_prefix_tokens=1)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + pos
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])
