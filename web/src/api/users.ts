import { getPage, patch, post, put } from './request'
import type { PageQuery, Role, User } from './types'

export const listUsers = (query: PageQuery) => getPage<User>('/api/admin/users', { ...query })
export const createUser = (body: { email: string; password: string; nickname?: string; role?: Role }) =>
  post<User>('/api/admin/users', body)
export const updateUser = (id: number, body: { nickname?: string; role?: Role; is_active?: boolean }) =>
  patch<User>(`/api/admin/users/${id}`, body)
export const resetUserPassword = (id: number, new_password: string) =>
  put<void>(`/api/admin/users/${id}/password`, { new_password })
