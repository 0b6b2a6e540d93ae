import { get, patch } from './request'
import type { AdminSettings } from './types'

export const getSettings = () => get<AdminSettings>('/api/admin/settings')
export const updateSettings = (body: Partial<AdminSettings>) => patch<AdminSettings>('/api/admin/settings', body)
