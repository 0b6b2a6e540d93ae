import { del, getAll, getPage, patch, post } from './request'
import type { PageQuery, SystemPrompt, SystemPromptInput, TestPrompt, TestPromptInput } from './types'

export interface PromptQuery extends PageQuery {
  category?: string
}

export const listSystemPrompts = (query: PromptQuery = {}) => getPage<SystemPrompt>('/api/system-prompts', { ...query })
export const listAllSystemPrompts = () => getAll<SystemPrompt>('/api/system-prompts')
export const createSystemPrompt = (body: SystemPromptInput) => post<SystemPrompt>('/api/system-prompts', body)
export const updateSystemPrompt = (id: number, body: Partial<SystemPromptInput>) =>
  patch<SystemPrompt>(`/api/system-prompts/${id}`, body)
export const deleteSystemPrompt = (id: number) => del(`/api/system-prompts/${id}`)

export const listTestPrompts = (query: PromptQuery = {}) => getPage<TestPrompt>('/api/test-prompts', { ...query })
export const listAllTestPrompts = () => getAll<TestPrompt>('/api/test-prompts')
export const createTestPrompt = (body: TestPromptInput) => post<TestPrompt>('/api/test-prompts', body)
export const updateTestPrompt = (id: number, body: Partial<TestPromptInput>) => patch<TestPrompt>(`/api/test-prompts/${id}`, body)
export const deleteTestPrompt = (id: number) => del(`/api/test-prompts/${id}`)
