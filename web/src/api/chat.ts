import { del, download, get, getAll, getPage, patch, post } from './request'
import { streamRequest, type StreamEvent } from './sse'
import type { ChatMessage, ChatSession, PageQuery, SendMessageInput } from './types'

export const listSessions = (query: PageQuery = {}) => getPage<ChatSession>('/api/chat/sessions', { ...query })
export const createSession = (title?: string) => post<ChatSession>('/api/chat/sessions', title ? { title } : {})
export const getSession = (id: number) => get<ChatSession>(`/api/chat/sessions/${id}`)
export const renameSession = (id: number, title: string) => patch<ChatSession>(`/api/chat/sessions/${id}`, { title })
export const deleteSession = (id: number) => del(`/api/chat/sessions/${id}`)
export const listMessages = (id: number) => getAll<ChatMessage>(`/api/chat/sessions/${id}/messages`)
export const stopSession = (id: number) => post<void>(`/api/chat/sessions/${id}/stop`)
export const exportSession = (id: number, format: 'md' | 'json') =>
  download(`/api/chat/sessions/${id}/export?format=${format}`, `session-${id}.${format}`)

type OnEvent = (ev: StreamEvent) => void

export const streamMessage = (id: number, body: SendMessageInput, onEvent: OnEvent, signal: AbortSignal) =>
  streamRequest(`/api/chat/sessions/${id}/messages`, { body, onEvent, signal })
export const streamRegenerate = (id: number, body: { model_config_id?: string }, onEvent: OnEvent, signal: AbortSignal) =>
  streamRequest(`/api/chat/sessions/${id}/regenerate`, { body, onEvent, signal })
export const streamEdit = (
  id: number,
  messageId: number,
  body: { content: string; model_config_id: string },
  onEvent: OnEvent,
  signal: AbortSignal,
) => streamRequest(`/api/chat/sessions/${id}/messages/${messageId}`, { method: 'PUT', body, onEvent, signal })
