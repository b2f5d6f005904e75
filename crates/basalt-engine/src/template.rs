//! Chat templates: the Jinja template that ships in a GGUF file's metadata,
//! rendered with minijinja (plus Python string methods, which HF templates use).

use minijinja::{context, Environment};
use serde::Serialize;

/// One turn of a conversation, in the role names chat templates expect.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatTurn {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatTurn {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the model's chat template is invalid: {0}")]
    Invalid(String),
    #[error("the model's chat template failed to render: {0}")]
    Render(String),
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<(), minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TemplateError::Invalid(e.to_string()))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Renders the conversation, ending with the assistant's opening when asked.
    pub fn render(
        &self,
        turns: &[ChatTurn],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Invalid(e.to_string()))?;
        template
            .render(context! {
                messages => turns,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| TemplateError::Render(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The template embedded in SmolLM2-135M-Instruct's GGUF metadata.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_smollm2_with_default_system_prompt() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").expect("template");
        let out = t
            .render(&[ChatTurn::new("user", "Hi")], true)
            .expect("render");
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn explicit_system_prompt_replaces_the_default() {
        let t = ChatTemplate::new(SMOLLM2, "", "").expect("template");
        let out = t
            .render(
                &[
                    ChatTurn::new("system", "Be terse."),
                    ChatTurn::new("user", "Hi"),
                ],
                false,
            )
            .expect("render");
        assert_eq!(
            out,
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new("{{ messages[0].content.strip() }}", "", "").expect("template");
        assert_eq!(
            t.render(&[ChatTurn::new("user", "  x ")], false)
                .expect("render"),
            "x"
        );
    }

    #[test]
    fn raise_exception_surfaces_as_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "")
            .expect("template");
        let err = t.render(&[], false).expect_err("must fail");
        assert!(err.to_string().contains("roles must alternate"));
    }
}
