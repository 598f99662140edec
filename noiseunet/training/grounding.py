"""The grounding loss: the cross-attention of the words naming an object should fall on that object.

TokenCompose (Wang et al., CVPR 2024) adds it to the diffusion loss when fine-tuning Stable Diffusion on
photos with segmented objects, and multi-object prompts follow better. Here it is a reason the text
encoder otherwise lacks: in "a red circle to the left of a blue square" the diffusion loss alone never
made the encoder tell the circle on the left from the circle on the right (README, "Relations taken
apart"), but at the noisiest timesteps, where the image says little, a query on the left can only find
"circle" if the circle's key says *left*.

For a named object with words W and pixels M, and a cross-attention map A (pixels x tokens), let
a(p) = sum over tokens of W of A(p, token): how much of pixel p's attention goes to the object's words.
The token loss is (1 - sum_p a(p) M(p) / sum_p a(p))^2: the share of that attention outside the object,
squared, as TokenCompose's L_token. M is averaged down to each layer's resolution; the loss is the mean
over objects and layers.
"""

import torch
import torch.nn.functional as F

from ..data.grounding import Region


def grounding_loss(maps: list[torch.Tensor], regions: list[list[Region]], positions: list[list[list[int]]]
                   ) -> torch.Tensor:
    """The token loss of ``maps`` (each (B, H*W, tokens), square) for the objects of ``regions`` (per sample),
    whose words are at ``positions`` (per sample, per word: its token indices). 0 when no sample names one."""
    samples, token_masks, pixel_masks = [], [], []
    tokens = maps[0].shape[-1]
    for b, (sample_regions, words) in enumerate(zip(regions, positions)):
        for start, stop, on in sample_regions:
            named = [t for word in words[start:stop] for t in word if t < tokens]
            if not named:  # truncated away
                continue
            token_mask = torch.zeros(tokens)
            token_mask[named] = 1.0
            samples.append(b)
            token_masks.append(token_mask)
            pixel_masks.append(torch.as_tensor(on, dtype=torch.float32))
    if not samples:
        return maps[0].new_zeros((), dtype=torch.float32)
    device = maps[0].device
    token_masks = torch.stack(token_masks).to(device)  # (R, tokens)
    pixel_masks = torch.stack(pixel_masks)[:, None].to(device)  # (R, 1, H, W)
    losses = []
    for attention in maps:
        side = int(round(attention.shape[1] ** 0.5))
        inside = F.adaptive_avg_pool2d(pixel_masks, side).flatten(1)  # (R, side * side): share of each cell
        to_words = (attention[samples].float() * token_masks[:, None, :]).sum(-1)  # (R, side * side)
        share = (to_words * inside).sum(-1) / to_words.sum(-1).clamp_min(1e-8)
        losses.append(((1 - share) ** 2).mean())
    return torch.stack(losses).mean()
