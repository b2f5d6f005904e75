//! Meta Llama: a raw `prompt` the caller has already formatted.

use basalt_engine::{SamplingParams, StopReason};
use basalt_proto::{from_json, BedrockError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{limits, Completion, ParsedText, PromptUsage, TextInvocation, TextResponder};

#[derive(Debug, Deserialize)]
struct Body {
    prompt: Option<String>,
    max_gen_len: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    images: Option<Value>,
}

pub fn parse(body: &[u8], model_id: &str) -> Result<ParsedText, BedrockError> {
    let b: Body = from_json(body)?;
    let prompt = b.prompt.ok_or_else(|| BedrockError::missing("prompt"))?;
    if b.images.is_some() {
        return Err(crate::images::no_vision(model_id));
    }
    let sampling = SamplingParams {
        temperature: limits::unit_interval("temperature", b.temperature)?.unwrap_or(0.5),
        top_p: limits::unit_interval("top_p", b.top_p)?.unwrap_or(0.9),
        ..SamplingParams::default()
    };
    Ok((
        TextInvocation {
            prompt: crate::prompt_markup::read(&prompt),
            max_tokens: limits::max_tokens("max_gen_len", b.max_gen_len, 512)?,
            stop_sequences: Vec::new(),
            sampling,
            output: crate::OutputMode::Text,
        },
        Box::new(Responder {
            prompt_tokens: None,
            produced: 0,
        }),
    ))
}

fn stop_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndOfTurn | StopReason::StopSequence(_) | StopReason::GrammarComplete => "stop",
        StopReason::MaxTokens | StopReason::ContextWindow => "length",
    }
}

struct Responder {
    /// Reported on the first chunk only, as Bedrock does.
    prompt_tokens: Option<u32>,
    produced: u32,
}

impl TextResponder for Responder {
    fn response(&self, done: &Completion) -> Value {
        json!({
            "generation": done.text,
            "prompt_token_count": done.input_tokens,
            "generation_token_count": done.output_tokens,
            "stop_reason": stop_reason(&done.stop_reason),
        })
    }
    fn stream_start(&mut self, prompt: &PromptUsage) -> Vec<Value> {
        self.prompt_tokens = Some(prompt.input_tokens);
        Vec::new()
    }
    fn stream_delta(&mut self, text: &str) -> Vec<Value> {
        self.produced += 1;
        vec![
            json!({"generation": text, "prompt_token_count": self.prompt_tokens.take(), "generation_token_count": self.produced, "stop_reason": null}),
        ]
    }
    fn stream_end(&mut self, done: &Completion) -> Vec<Value> {
        vec![json!({
            "generation": "",
            "prompt_token_count": done.input_tokens,
            "generation_token_count": done.output_tokens,
            "stop_reason": stop_reason(&done.stop_reason),
        })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Prompt;

    #[test]
    fn plain_prompt_goes_to_the_model_as_given() {
        let prompt = "Complete this: the sky is";
        let body = json!({"prompt": prompt, "max_gen_len": 64, "temperature": 0.7, "top_p": 0.9});
        let (inv, r) =
            parse(body.to_string().as_bytes(), "meta.llama3-70b-instruct-v1:0").expect("parse");
        assert_eq!(inv.prompt, Prompt::Raw(prompt.into()));
        assert_eq!(inv.max_tokens, 64);
        let v = r.response(&Completion {
            text: "Hello".into(),
            stop_reason: StopReason::MaxTokens,
            input_tokens: 9,
            output_tokens: 64,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency_ms: 1,
            first_byte_ms: 1,
        });
        assert_eq!(v["generation"], "Hello");
        assert_eq!(v["stop_reason"], "length");
        assert_eq!(v["prompt_token_count"], 9);
    }
}
