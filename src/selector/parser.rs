//! Calico's selector grammar: `||` binds loosest, then `&&`, then `!`, which applies to one
//! operation or parenthesised group; an empty selector is `all()`.

use super::expr::{Expr, Label};
use super::lexer::{tokenize, Spanned, Token};
use super::SelectorError;

pub fn parse(selector: &str) -> Result<Expr, SelectorError> {
    let tokens = tokenize(selector)?;
    if matches!(tokens[0].token, Token::Eof) {
        return Ok(Expr::All);
    }
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.or()?;
    let rest = parser.peek();
    if !matches!(rest.token, Token::Eof) {
        return Err(SelectorError::new(
            rest.position,
            "unexpected text after the end of the expression",
        ));
    }
    Ok(expr)
}

struct Parser {
    tokens: Vec<Spanned>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Spanned {
        // The lexer always ends the list with Eof, and nothing advances past it.
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Spanned {
        let token = self.peek().clone();
        if !matches!(token.token, Token::Eof) {
            self.at += 1;
        }
        token
    }

    fn or(&mut self) -> Result<Expr, SelectorError> {
        let mut operands = vec![self.and()?];
        while matches!(self.peek().token, Token::Or) {
            self.next();
            operands.push(self.and()?);
        }
        Ok(if operands.len() == 1 {
            operands.remove(0)
        } else {
            Expr::Or(operands)
        })
    }

    fn and(&mut self) -> Result<Expr, SelectorError> {
        let mut operands = vec![self.operation()?];
        while matches!(self.peek().token, Token::And) {
            self.next();
            operands.push(self.operation()?);
        }
        Ok(if operands.len() == 1 {
            operands.remove(0)
        } else {
            Expr::And(operands)
        })
    }

    fn operation(&mut self) -> Result<Expr, SelectorError> {
        let mut negated = false;
        while matches!(self.peek().token, Token::Not) {
            self.next();
            negated = !negated;
        }
        let first = self.next();
        let expr = match first.token {
            Token::Has(name) => Expr::Has(Label::new(name)),
            Token::All => Expr::All,
            Token::Global => Expr::Global,
            Token::LParen => {
                let inner = self.or()?;
                let close = self.next();
                if !matches!(close.token, Token::RParen) {
                    return Err(SelectorError::new(close.position, "expected )"));
                }
                inner
            }
            Token::Label(name) => self.comparison(Label::new(name), first.position)?,
            Token::Eof => {
                return Err(SelectorError::new(
                    first.position,
                    "unexpected end of selector: expected an expression",
                ))
            }
            other => {
                return Err(SelectorError::new(
                    first.position,
                    format!("unexpected {}", describe(&other)),
                ))
            }
        };
        Ok(if negated { Expr::negation(expr) } else { expr })
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        let token = self.next();
        match token.token {
            Token::Str(value) => Ok(value),
            other => Err(SelectorError::new(
                token.position,
                format!(
                    "expected a quoted string, found {} (the right side of a comparison is a string literal)",
                    describe(&other)
                ),
            )),
        }
    }

    fn comparison(&mut self, label: Label, position: usize) -> Result<Expr, SelectorError> {
        let op = self.next();
        Ok(match op.token {
            Token::Eq => Expr::Eq(label, self.string()?),
            Token::Ne => Expr::Ne(label, self.string()?),
            Token::Contains => Expr::Contains(label, self.string()?),
            Token::StartsWith => Expr::StartsWith(label, self.string()?),
            Token::EndsWith => Expr::EndsWith(label, self.string()?),
            Token::In | Token::NotIn => {
                let values = self.set()?;
                if matches!(op.token, Token::In) {
                    Expr::In(label, values)
                } else {
                    Expr::NotIn(label, values)
                }
            }
            Token::Eof => {
                return Err(SelectorError::new(
                    position,
                    format!(
                        "label {:?} needs an operator and a value (a bare label is not a selector; use has({}))",
                        label.name(),
                        label.name()
                    ),
                ))
            }
            other => {
                return Err(SelectorError::new(
                    op.position,
                    format!("expected == or != after a label, found {}", describe(&other)),
                ))
            }
        })
    }

    /// `{ "a", "b", }`: strings separated by commas, a trailing comma allowed.
    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        let open = self.next();
        if !matches!(open.token, Token::LBrace) {
            return Err(SelectorError::new(
                open.position,
                "expected a set literal such as {\"a\", \"b\"}",
            ));
        }
        let mut values = Vec::new();
        while let Token::Str(value) = &self.peek().token {
            values.push(value.clone());
            self.next();
            if matches!(self.peek().token, Token::Comma) {
                self.next();
            } else {
                break;
            }
        }
        let close = self.next();
        if !matches!(close.token, Token::RBrace) {
            return Err(SelectorError::new(
                close.position,
                "expected } to close the set",
            ));
        }
        Ok(Expr::set(values))
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Label(l) => format!("label {l:?}"),
        Token::Str(s) => format!("string {s:?}"),
        Token::LBrace => "{".into(),
        Token::RBrace => "}".into(),
        Token::Comma => ",".into(),
        Token::Eq => "==".into(),
        Token::Ne => "!=".into(),
        Token::In => "in".into(),
        Token::Not => "!".into(),
        Token::NotIn => "not in".into(),
        Token::Contains => "contains".into(),
        Token::StartsWith => "starts with".into(),
        Token::EndsWith => "ends with".into(),
        Token::All => "all()".into(),
        Token::Global => "global()".into(),
        Token::Has(l) => format!("has({l})"),
        Token::LParen => "(".into(),
        Token::RParen => ")".into(),
        Token::And => "&&".into(),
        Token::Or => "||".into(),
        Token::Eof => "the end of the selector".into(),
    }
}
