import { describe, expect, it } from 'vitest'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import en from '@/locales/en'
import zhCN from '@/locales/zh-CN'

function keys(obj: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(obj).flatMap(([k, v]) =>
    typeof v === 'object' && v !== null ? keys(v as Record<string, unknown>, `${prefix}${k}.`) : [`${prefix}${k}`],
  )
}

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name: string) => {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) return sources(p)
    return /\.(vue|ts)$/.test(name) && !p.includes('locales') ? [p] : []
  })
}

describe('locales', () => {
  it('zh-CN and en have the same keys', () => {
    expect(keys(zhCN).sort()).toEqual(keys(en).sort())
  })

  it('every literal key the code uses exists', () => {
    const known = new Set(keys(en))
    const root = join(__dirname, '../../src')
    const used = new Set<string>()
    for (const file of sources(root)) {
      const text = readFileSync(file, 'utf8')
      for (const m of text.matchAll(/\$?\bt\(\s*'([a-zA-Z][\w.]*)'/g)) used.add(m[1]!)
      for (const m of text.matchAll(/title: '([a-zA-Z][\w.]*)'/g)) used.add(m[1]!)
    }
    const missing = [...used].filter((k) => !known.has(k))
    expect(used.size).toBeGreaterThan(50)
    expect(missing).toEqual([])
  })
})
