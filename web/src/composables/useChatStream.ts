import type { StreamEvent } from '@/api/sse'
import type { FinishReason, ResponseMetrics } from '@/api/types'

/** An answer as it is being built from stream events (and as loaded from history). */
export interface AnswerState {
  content: string
  reasoning: string
  streaming: boolean
  finishReason: FinishReason | null
  metrics: ResponseMetrics | null
  usage: { prompt_tokens?: number; completion_tokens?: number; reasoning_tokens?: number } | null
  error: string | null
  model: string | null
}

export function emptyAnswer(): AnswerState {
  return { content: '', reasoning: '', streaming: true, finishReason: null, metrics: null, usage: null, error: null, model: null }
}

const str = (v: unknown): string => (typeof v === 'string' ? v : '')

/**
 * Applies one `reasoning`/`content`/`usage`/`done`/`error` event to an answer; `meta` is the
 * caller's (it carries ids). Shared by the playground and every comparison column.
 */
export function applyAnswerEvent(answer: AnswerState, ev: StreamEvent): void {
  const d = ev.data
  switch (ev.event) {
    case 'reasoning':
      answer.reasoning += str(d.delta)
      break
    case 'content':
      answer.content += str(d.delta)
      break
    case 'usage':
      answer.usage = d as AnswerState['usage']
      break
    case 'error':
      answer.error = str(d.message) || str(d.code) || 'error'
      break
    case 'done':
      answer.finishReason = (str(d.finish_reason) || 'stop') as FinishReason
      answer.metrics = (d.metrics as ResponseMetrics | undefined) ?? null
      answer.streaming = false
      break
    default:
      break
  }
}
