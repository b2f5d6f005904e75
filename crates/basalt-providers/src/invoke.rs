//! InvokeModel dispatch: a body and a catalog entry in, the adapter that
//! understands them out.

use basalt_catalog::BodyFormat;
use basalt_proto::BedrockError;

use crate::embeddings::{self, EmbedInvocation};
use crate::image_generation::{self, ImageInvocation};
use crate::{anthropic, cohere, meta, mistral, nova, titan, ParsedText, Target};

/// The side Stable Image and SD3 sizes are reckoned from: Bedrock's models make about a
/// megapixel at every aspect ratio.
const STABLE_IMAGE_BASE: u32 = 1024;

/// What an InvokeModel body asks for.
pub enum Invocation {
    Text(ParsedText),
    Embed(EmbedInvocation),
    Image(ImageInvocation),
}

pub fn parse(
    format: BodyFormat,
    body: &[u8],
    target: Target<'_>,
) -> Result<Invocation, BedrockError> {
    Ok(match format {
        BodyFormat::Anthropic => Invocation::Text(anthropic::parse(body, target)?),
        BodyFormat::TitanText => Invocation::Text(titan::parse(body)?),
        BodyFormat::Llama => Invocation::Text(meta::parse(body, target.model_id)?),
        BodyFormat::Mistral => Invocation::Text(mistral::parse(body, target.model_id)?),
        BodyFormat::Nova => Invocation::Text(nova::parse(body, target)?),
        BodyFormat::CohereCommandR => Invocation::Text(cohere::parse_command_r(body)?),
        BodyFormat::CohereCommand => Invocation::Text(cohere::parse_command(body)?),
        BodyFormat::TitanEmbedV1 => Invocation::Embed(embeddings::parse_titan_v1(body)?),
        BodyFormat::TitanEmbedV2 => Invocation::Embed(embeddings::parse_titan_v2(body)?),
        BodyFormat::CohereEmbed => {
            Invocation::Embed(embeddings::parse_cohere(body, target.model_id)?)
        }
        BodyFormat::StabilitySdxl => Invocation::Image(image_generation::parse_sdxl(body)?),
        BodyFormat::StableImage => Invocation::Image(image_generation::parse_stable_image(
            body,
            STABLE_IMAGE_BASE,
        )?),
        BodyFormat::TitanImage => Invocation::Image(image_generation::parse_titan_image(body)?),
    })
}
