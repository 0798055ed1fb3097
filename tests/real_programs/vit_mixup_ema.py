"""The timm ViT training recipe (``timm/train.py`` with
``timm.models.vision_transformer.VisionTransformer``, ``--mixup``,
``--model-ema``, cosine schedule), written in this file because timm cannot be
installed here.

A small VisionTransformer (3x32x32 images, patch 8, dim 32, depth 2, heads 2,
10 classes) with timm's module layout (``patch_embed.proj`` Conv2d,
``cls_token``, ``pos_embed``, ``pos_drop``, pre-norm ``blocks`` of
``Attention`` + ``Mlp``, ``norm``, ``head``); a batch-mode Mixup written here
(the batch mixed with its flipped self, in place, lam from a seeded numpy Beta
draw, soft one-hot targets), ``SoftTargetCrossEntropy``, AdamW with timm's
no-weight-decay groups, a cosine LR schedule stepped per iteration, and an EMA
of the model; batch 4; 3 steps; finally the EMA model is evaluated under
no_grad.

A tracer must get right: ``pos_drop = nn.Dropout(p=0.0)`` -- a module whose op
returns its own input tensor (same object in, same object out) --, ``cls_token``
expanded and concatenated to the patch tokens, the ``pos_embed`` parameter
added by broadcasting, ``qkv`` reshaped/permuted/``unbind`` into q, k, v and the
explicit scaled dot product (``q * scale``, ``@``, ``softmax``), Mixup's in-place
``x.flip(0).mul_(1 - lam)`` and ``x.mul_(lam).add_(...)`` on the input batch
and ``scatter_`` one-hot targets, the soft-target loss, and
``torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999))``:
a deep copy of the model made by library code, updated by
``ema.update_parameters(model)`` after each ``optimizer.step()`` (the first
call copies the weights with ``p.detach().copy_``, later ones
``torch._foreach_lerp_`` under no_grad; its ``n_averaged`` buffer counts), then
called in eval mode.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

torch.manual_seed(0)
np.random.seed(0)


# -- model (timm.models.vision_transformer, trimmed) --------------------------------------

class PatchEmbed(nn.Module):
    """ 2D Image to Patch Embedding """

    def __init__(self, img_size=32, patch_size=8, in_chans=3, embed_dim=32):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.Identity()

    def forward(self, x):
        x = self.proj(x)
        x = x.flatten(2).transpose(1, 2)  # NCHW -> NLC
        x = self.norm(x)
        return x


class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0., proj_drop=0.):
        super().__init__()
        assert dim % num_heads == 0, 'dim should be divisible by num_heads'
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = False  # timm's explicit path (TIMM_FUSED_ATTN=0)

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)

        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.)
        else:
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = attn @ v

        x = x.transpose(1, 2).reshape(B, N, C)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


class Mlp(nn.Module):
    """ MLP as used in Vision Transformer, MLP-Mixer and related networks """

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        x = self.fc1(x)
        x = self.act(x)
        x = self.drop1(x)
        x = self.norm(x)
        x = self.fc2(x)
        x = self.drop2(x)
        return x


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, proj_drop=0., attn_drop=0.,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.ls1 = nn.Identity()
        self.drop_path1 = nn.Identity()

        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.ls2 = nn.Identity()
        self.drop_path2 = nn.Identity()

    def forward(self, x):
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


class VisionTransformer(nn.Module):
    def __init__(self, img_size=32, patch_size=8, in_chans=3, num_classes=10, embed_dim=32, depth=2,
                 num_heads=2, mlp_ratio=4., qkv_bias=True, drop_rate=0., pos_drop_rate=0.):
        super().__init__()
        self.num_classes = num_classes
        self.global_pool = 'token'
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim)
        num_patches = self.patch_embed.num_patches

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + self.num_prefix_tokens, embed_dim) * .02)
        self.pos_drop = nn.Dropout(p=pos_drop_rate)
        self.patch_drop = nn.Identity()
        self.norm_pre = nn.Identity()

        self.blocks = nn.Sequential(*[
            Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)
            for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

        # Classifier Head
        self.fc_norm = nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        self.init_weights()

    def init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {'pos_embed', 'cls_token'}

    def _pos_embed(self, x):
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed
        return self.pos_drop(x)

    def forward_features(self, x):
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        x = self.blocks(x)
        x = self.norm(x)
        return x

    def forward_head(self, x, pre_logits=False):
        x = x[:, 0]  # class token
        x = self.fc_norm(x)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


def _init_weights(module):
    """ ViT weight initialization, original timm impl (for reproducibility) """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# -- data: Mixup and the loss (timm.data.mixup, timm.loss) -------------------------------

def one_hot(x, num_classes, on_value=1., off_value=0.):
    x = x.long().view(-1, 1)
    return torch.full((x.size()[0], num_classes), off_value, device=x.device).scatter_(1, x, on_value)


def mixup_target(target, num_classes, lam=1., smoothing=0.0):
    off_value = smoothing / num_classes
    on_value = 1. - smoothing + off_value
    y1 = one_hot(target, num_classes, on_value=on_value, off_value=off_value)
    y2 = one_hot(target.flip(0), num_classes, on_value=on_value, off_value=off_value)
    return y1 * lam + y2 * (1. - lam)


class Mixup:
    """ Mixup that mixes a batch with its flipped self ('batch' mode, no cutmix) """

    def __init__(self, mixup_alpha=0.8, label_smoothing=0.1, num_classes=10):
        self.mixup_alpha = mixup_alpha
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes

    def _mix_batch(self, x):
        lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
        if lam == 1.:
            return 1.
        x_flipped = x.flip(0).mul_(1. - lam)
        x.mul_(lam).add_(x_flipped)
        return lam

    def __call__(self, x, target):
        assert len(x) % 2 == 0, 'Batch size should be even when using this'
        lam = self._mix_batch(x)
        target = mixup_target(target, self.num_classes, lam, self.label_smoothing)
        return x, target


class SoftTargetCrossEntropy(nn.Module):

    def __init__(self):
        super().__init__()

    def forward(self, x, target):
        loss = torch.sum(-target * F.log_softmax(x, dim=-1), dim=-1)
        return loss.mean()


def param_groups_weight_decay(model, weight_decay=1e-5, no_weight_decay_list=()):
    no_weight_decay_list = set(no_weight_decay_list)
    decay = []
    no_decay = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name in no_weight_decay_list:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {'params': no_decay, 'weight_decay': 0.},
        {'params': decay, 'weight_decay': weight_decay}]


# -- train.py ------------------------------------------------------------------------------

num_classes = 10
batch_size = 4
num_steps = 3
base_lr = 1e-3
min_lr = 1e-5

mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
images = (torch.rand(num_steps * batch_size, 3, 32, 32) - mean) / std
labels = torch.randint(0, num_classes, (num_steps * batch_size,))
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=batch_size)

model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=num_classes)
model_ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999))
mixup_fn = Mixup(mixup_alpha=0.8, label_smoothing=0.1, num_classes=num_classes)
train_loss_fn = SoftTargetCrossEntropy()
validate_loss_fn = nn.CrossEntropyLoss()

optimizer = torch.optim.AdamW(param_groups_weight_decay(model, 0.05, model.no_weight_decay()), lr=base_lr)


def cosine_lr(num_updates, warmup_t=1, warmup_lr_init=1e-4):
    """timm CosineLRScheduler.step_update: per-iteration cosine with linear warmup"""
    if num_updates < warmup_t:
        return warmup_lr_init + num_updates * (base_lr - warmup_lr_init) / warmup_t
    t = num_updates - warmup_t
    t_i = num_steps - warmup_t
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t / t_i))


model.train()
num_updates = 0
for param_group in optimizer.param_groups:
    param_group['lr'] = cosine_lr(num_updates)
for batch_idx, (input, target) in enumerate(loader):
    input, target = mixup_fn(input, target)
    output = model(input)
    loss = train_loss_fn(output, target)

    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    model_ema.update_parameters(model)

    num_updates += 1
    for param_group in optimizer.param_groups:
        param_group['lr'] = cosine_lr(num_updates)
    print(f"Train: [{batch_idx}] Loss: {loss.item():.6f} LR: {optimizer.param_groups[0]['lr']:.6e}")

# validate the EMA model
model_ema.eval()
with torch.no_grad():
    val_images = (torch.rand(batch_size, 3, 32, 32) - mean) / std
    val_labels = torch.randint(0, num_classes, (batch_size,))
    output = model_ema(val_images)
    loss = validate_loss_fn(output, val_labels)
    acc1 = (output.argmax(dim=-1) == val_labels).float().mean() * 100.
print(f"Test (EMA): Loss: {loss.item():.6f} Acc@1: {acc1.item():.4f} n_averaged {model_ema.n_averaged.item()}")
