"""Each network's stages from the output down to the input, in cascading order (a UNet's blocks, a MONAI ResNet's
layers): the denoiser registry's stage lists and the cascading-randomisation check both read them.
"""


def unet_stages(unet) -> list[tuple[str, list]]:
    """A diffusers UNet2DModel's blocks from the output down to the input (cascading order)."""
    stages = [("output", [unet.conv_norm_out, unet.conv_out])]
    stages += [(f"up_blocks.{i}", [b]) for i, b in reversed(list(enumerate(unet.up_blocks)))]
    stages += [("mid_block", [unet.mid_block])]
    stages += [(f"down_blocks.{i}", [b]) for i, b in reversed(list(enumerate(unet.down_blocks)))]
    embeddings = [
        m for m in (unet.conv_in, unet.time_embedding, getattr(unet, "class_embedding", None)) if m is not None
    ]
    return stages + [("input+embeddings", embeddings)]


def resnet_stages(resnet) -> list[tuple[str, list]]:
    """MONAI ResNet from the output down to the input."""
    return (
        [("fc", [resnet.fc])]
        + [(name, [getattr(resnet, name)]) for name in ("layer4", "layer3", "layer2", "layer1")]
        + [("stem", [resnet.conv1, resnet.bn1])]
    )
